//! One program per action. Each file holds only what is special about its
//! action; the shared plumbing is `chain::action_program!`.
mod count;
mod drop;
