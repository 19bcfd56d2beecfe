//! `tessera new NAME`: a task crate from a template, ready to build, test and run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

/// Options of `tessera new`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The crate's name (letters, digits, `-` and `_`; it starts with a letter).
    name: String,
    /// Where to create it (default: a new directory NAME here).
    #[arg(long)]
    path: Option<PathBuf>,
    /// The SDK dependency: a path to `guest-sdk` in a Tessera checkout, or a git URL (default:
    /// the checkout this tessera was built from).
    #[arg(long)]
    sdk: Option<String>,
}

/// The template's files: where each goes and its text, with `{{name}}`, `{{lib}}` and
/// `{{sdk}}` to fill in.
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/task/Cargo.toml.tmpl"),
    ),
    (
        ".cargo/config.toml",
        include_str!("../../templates/task/.cargo/config.toml.tmpl"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/task/gitignore.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/task/src/lib.rs.tmpl"),
    ),
];

/// Whether `name` can name a crate.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{name:?} cannot name a crate: use up to 64 letters, digits, '-' and '_', starting \
             with a letter"
        );
    }
    Ok(())
}

/// The `tessera-guest = …` dependency for `sdk` (a path or a git URL).
fn sdk_dependency(sdk: &str) -> String {
    if sdk.starts_with("https://") || sdk.starts_with("ssh://") || sdk.starts_with("git@") {
        format!("{{ git = {sdk:?} }}")
    } else {
        format!("{{ path = {sdk:?} }}")
    }
}

/// The SDK of the checkout this binary was built from, if it is still there.
fn default_sdk() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    sdk.join("Cargo.toml")
        .is_file()
        .then(|| sdk.canonicalize().unwrap_or(sdk))
}

/// The template's files filled in for crate `name` with the SDK at `sdk`.
fn render(name: &str, sdk: &str) -> Vec<(&'static str, String)> {
    let lib = name.replace('-', "_");
    let dependency = sdk_dependency(sdk);
    FILES
        .iter()
        .map(|(path, text)| {
            let text = text
                .replace("{{name}}", name)
                .replace("{{lib}}", &lib)
                .replace("{{sdk}}", &dependency);
            (*path, text)
        })
        .collect()
}

/// Runs `tessera new`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.path.unwrap_or_else(|| PathBuf::from(&args.name));
    if dir.exists() {
        bail!(
            "{} already exists: choose another name, or --path for a new directory",
            dir.display()
        );
    }
    let sdk = match args.sdk {
        Some(sdk) => sdk,
        None => default_sdk()
            .with_context(|| {
                "this tessera was not built from a checkout that is still on disk: give the \
                 SDK with --sdk PATH/TO/tessera/guest-sdk (or a git URL)"
            })?
            .display()
            .to_string(),
    };
    for (path, text) in render(&args.name, &sdk) {
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("could not create {}", parent.display()))?;
        }
        std::fs::write(&file, text)
            .with_context(|| format!("could not write {}", file.display()))?;
    }
    let lib = args.name.replace('-', "_");
    println!("Created task crate {} in {}", args.name, dir.display());
    println!("  cd {}", dir.display());
    println!("  cargo test                # runs the tasks natively (tessera_guest::testing)");
    println!("  cargo build-component     # builds target/wasm32-wasip2/release/{lib}.wasm");
    println!("  tessera submit Greetings --input '{{\"names\": [\"Ada\", \"Grace\"]}}'");
    println!("  tessera runner target/wasm32-wasip2/release/{lib}.wasm");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_dependencies() {
        assert!(check_name("word-freq_2").is_ok());
        for bad in ["", "2fast", "a b", "../x", "ä"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            sdk_dependency("/src/tessera/guest-sdk"),
            r#"{ path = "/src/tessera/guest-sdk" }"#
        );
        assert_eq!(
            sdk_dependency("https://example.org/tessera.git"),
            r#"{ git = "https://example.org/tessera.git" }"#
        );
        let files = render("word-freq", "/sdk");
        let manifest = &files.iter().find(|(p, _)| *p == "Cargo.toml").unwrap().1;
        assert!(manifest.contains(r#"name = "word-freq""#));
        assert!(manifest.contains(r#"tessera-guest = { path = "/sdk" }"#));
        assert!(
            files.iter().all(|(_, text)| !text.contains("{{")),
            "every placeholder filled"
        );
        let config = &files
            .iter()
            .find(|(p, _)| *p == ".cargo/config.toml")
            .unwrap()
            .1;
        assert!(config.contains("word_freq.wasm"));
    }
}
