//! One program per action. Each file holds only what is special about its
//! action; the shared plumbing is `chain::action_program!`.
mod count;
mod drop;
mod record_flow;
pub(crate) mod recover_add_addr;
mod set_backup;
mod set_window;
pub(crate) mod strip_add_addr;
