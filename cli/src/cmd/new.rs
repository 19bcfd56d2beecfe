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
    /// Lay it out for `cargo component build` (cargo-component) instead of plain `cargo build
    /// --target wasm32-wasip2`.
    #[arg(long)]
    component: bool,
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
    (".gitignore", GITIGNORE),
    ("src/lib.rs", LIB_RS),
];

/// The `--component` flavour: cargo-component picks the target itself, so no
/// `.cargo/config.toml`.
const COMPONENT_FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/task/Cargo.component.toml.tmpl"),
    ),
    (".gitignore", GITIGNORE),
    ("src/lib.rs", LIB_RS),
];

const GITIGNORE: &str = include_str!("../../templates/task/gitignore.tmpl");
const LIB_RS: &str = include_str!("../../templates/task/src/lib.rs.tmpl");

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

/// The template's files (the `component` flavour's, or the plain ones) filled in for crate
/// `name` with the SDK at `sdk`.
fn render(name: &str, sdk: &str, component: bool) -> Vec<(&'static str, String)> {
    let lib = name.replace('-', "_");
    let dependency = sdk_dependency(sdk);
    let files = if component { COMPONENT_FILES } else { FILES };
    files
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
    for (path, text) in render(&args.name, &sdk, args.component) {
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
    let (build, wasm) = if args.component {
        (
            "cargo component build --release",
            format!("target/wasm32-wasip1/release/{lib}.wasm"),
        )
    } else {
        (
            "cargo build-component    ",
            format!("target/wasm32-wasip2/release/{lib}.wasm"),
        )
    };
    println!("  cd {}", dir.display());
    println!("  cargo test                # runs the tasks natively (tessera_guest::testing)");
    println!("  {build} # builds {wasm}");
    println!("  tessera submit Greetings --input '{{\"names\": [\"Ada\", \"Grace\"]}}'");
    println!("  tessera runner {wasm}");
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
        let files = render("word-freq", "/sdk", false);
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

        // The cargo-component flavour has no .cargo/config.toml to leave dead.
        let files = render("word-freq", "/sdk", true);
        let paths: Vec<&str> = files.iter().map(|(p, _)| *p).collect();
        assert_eq!(paths, ["Cargo.toml", ".gitignore", "src/lib.rs"]);
        assert!(files[0].1.contains("[package.metadata.component]"));
        assert!(files.iter().all(|(_, text)| !text.contains("{{")));
    }
}
