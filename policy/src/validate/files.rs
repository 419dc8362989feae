//! File-level rules: the version of every file, and `settings`.

use super::Ctx;
use crate::model::{MAX_FLOW_CAPACITY, MIN_FLOW_CAPACITY, POLICY_VERSION};

pub(super) fn check(ctx: &mut Ctx<'_>) {
    check_versions(ctx);
    check_settings(ctx);
}

/// Every file declares `version` (serde enforces presence); it must be the
/// one this build understands, and all files of a directory must agree.
fn check_versions(ctx: &mut Ctx<'_>) {
    let Some(first) = ctx.files.first() else {
        return;
    };
    let first_version = first.policy.version;
    let first_spot = ctx.root(0).get("version");
    for file in 0..ctx.files.len() {
        let version = ctx.files[file].policy.version;
        let spot = ctx.root(file).get("version");
        if file > 0 && version != first_version {
            let message = format!(
                "version {version} does not match version {first_version} declared in {}",
                ctx.describe(first_spot)
            );
            ctx.report(
                spot,
                message,
                format!(
                    "every drop-in file must declare the same version: `version: {POLICY_VERSION}`"
                ),
            );
        } else if version != POLICY_VERSION {
            ctx.report(
                spot,
                format!("unsupported policy version {version}"),
                format!("this emptcp understands policy version {POLICY_VERSION}: `version: {POLICY_VERSION}`"),
            );
        }
    }
}

fn check_settings(ctx: &mut Ctx<'_>) {
    let settings_files = ctx.merged.settings_files.clone();
    if let Some((&first, others)) = settings_files.split_first() {
        let first_spot = ctx.root(first).key("settings");
        for &file in others {
            let message = format!("settings are already set in {}", ctx.describe(first_spot));
            ctx.report(
                ctx.root(file).key("settings"),
                message,
                "only one drop-in file may contain `settings`; move them into one file",
            );
        }
        let capacity = ctx.policy().settings.flow_capacity;
        if !(MIN_FLOW_CAPACITY..=MAX_FLOW_CAPACITY).contains(&capacity) {
            ctx.report(
                ctx.root(first).get("settings").get("flow_capacity"),
                format!("flow_capacity {capacity} is out of range"),
                format!("flow_capacity is {MIN_FLOW_CAPACITY} to {MAX_FLOW_CAPACITY} flows"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::test_support::*;

    #[test]
    fn version_must_be_1() {
        let e = one_error(
            &BASE.replace("version: 1", "version: 2"),
            "unsupported policy version 2",
        );
        assert_at(&e, 1, 10);
        assert!(e.hint.unwrap().contains("version: 1"));
    }

    #[test]
    fn flow_capacity_range() {
        let text = format!("{BASE}settings:\n  flow_capacity: 1000\n");
        let e = one_error(&text, "flow_capacity 1000 is out of range");
        assert_at(&e, 9, 18);
        let text = format!("{BASE}settings:\n  flow_capacity: 16777216\n");
        assert!(errors(&text).is_empty());
        let text = format!("{BASE}settings:\n  flow_capacity: 16777217\n");
        one_error(&text, "out of range");
    }
}
