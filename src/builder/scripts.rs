//! The definition file's sections, run on the staged tree: the base layout first,
//! then `%setup` (on the host), `%files` and `%post`; `%test` once the recipe's own
//! layout is in place. How one script runs is `post`'s business.

#![forbid(unsafe_code)]

use std::path::Path;

use super::error::Result;
use super::layout;
use super::post;
use super::recipe;
use super::source::Definition;
use super::stage::{self, Staged};

/// What `%post` appends to `$APPTAINER_ENVIRONMENT`.
const ENV91: &str = ".singularity.d/env/91-environment.sh";

/// Lays out `base` (and an OCI configuration's entries), then runs `%setup`, `%files`
/// and `%post`. Returns how many device nodes `%files` left out.
pub fn prepare(
    staged: &Staged,
    def: Option<&Definition>,
    base: &[layout::Entry],
    devices: bool,
) -> Result<u64> {
    let root = &staged.root;
    layout::apply_to_dir(root, base)?;
    if let Some(c) = &staged.oci_config {
        let entries = stage::oci_entries(c, root)?;
        layout::apply_to_dir(root, &entries)?;
    }
    // Made for %post to append to, and removed again if it stays empty.
    let env91 = Path::new(ENV91);
    let made_env91 = root.kind(env91)?.is_none();
    if made_env91 {
        root.write_file(env91, b"", 0o644)?;
    }
    let mut skipped = 0;
    if let Some((r, file)) = def {
        if let Some(setup) = &r.setup {
            let ctx = post::Context {
                file,
                section: "setup",
                trace: true,
            };
            post::run_setup(&ctx, setup, &staged.dir.root())?;
        }
        skipped += stage::copy_files(r, file, root, devices)?;
        if let Some(p) = &r.post {
            let ctx = post::Context {
                file,
                section: "post",
                trace: true,
            };
            crate::say_info!("veil build: running %post");
            post::run_in_root(&ctx, p, &staged.dir.root(), &[])?;
        }
    }
    if made_env91 && root.read(env91)?.is_some_and(|b| b.is_empty()) {
        root.remove(env91)?;
    }
    Ok(skipped)
}

/// `%test`, unless `notest`: the image's test script, in the image's environment.
pub fn run_test(staged: &Staged, def: Option<&Definition>, notest: bool) -> Result<()> {
    let Some((r, file)) = def else {
        return Ok(());
    };
    let (Some(t), false) = (&r.test, notest) else {
        return Ok(());
    };
    let ctx = post::Context {
        file,
        section: "test",
        trace: false,
    };
    crate::say_info!("veil build: running %test");
    let script = recipe::Script {
        body: "for f in /.singularity.d/env/*.sh; do [ -f \"$f\" ] && . \"$f\"; done\nexec /.singularity.d/test\n".into(),
        interpreter: None,
        line: t.line,
    };
    post::run_in_root(&ctx, &script, &staged.dir.root(), &[])
}
