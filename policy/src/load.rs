//! Reading policy files from disk and parsing each into the model plus a
//! positioned tree (for locating the errors validation finds later).

use super::error::{PolicyError, PolicyErrors, Pos};
use super::every;
use super::locate::{self, Node};
use super::model::Policy;
use super::yaml_error::line_widths;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest policy file read. A real policy is a few KiB; anything near this
/// is a wrong path (a log, a binary), and reading it whole would let a bad
/// mount exhaust the daemon's memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// One parsed file.
#[derive(Debug)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub policy: Policy,
    pub tree: Node,
}

/// Reads a policy file: at most [`MAX_FILE_BYTES`], valid UTF-8.
pub(crate) fn read(path: &Path) -> Result<String, PolicyError> {
    let open_error = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => "check the path",
            std::io::ErrorKind::PermissionDenied => "check the file's permissions",
            _ => "check that the path is a readable file",
        };
        PolicyError::new(path, format!("cannot read policy file: {e}")).hint(hint)
    };
    let file = open_nonblocking(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if metadata.is_dir() {
        return Err(PolicyError::new(path, "is a directory, not a policy file")
            .hint("load a directory of drop-in files as a directory (emptcp --dir)"));
    }
    if !metadata.is_file() {
        return Err(PolicyError::new(
            path,
            format!("is a {}, not a regular file", special_kind(&metadata)),
        )
        .hint("a policy is a regular file (or a symlink to one): remove this entry or replace it with a file"));
    }
    let too_large = |size: String| {
        PolicyError::new(
            path,
            format!("policy file is {size}, larger than the limit of 1 MiB"),
        )
        .hint("a policy is a few KiB of YAML: check that this is the right file")
    };
    if metadata.len() > MAX_FILE_BYTES {
        return Err(too_large(format!("{} bytes", metadata.len())));
    }
    // The size can change between stat and read (or be unknown, for a pipe):
    // never read more than the limit plus one byte.
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(open_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large("more than 1 MiB".to_string()));
    }
    String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // Up to `valid_up_to` the bytes are UTF-8, so this cannot fail.
        let before = std::str::from_utf8(valid).unwrap_or_default();
        PolicyError::new(path, "policy file is not valid UTF-8")
            .at(Some(position_after(before)))
            .hint("save the file as UTF-8")
    })
}

/// Opens `path` for reading without blocking: opening a FIFO (a named pipe
/// left in a drop-in directory) blocks until a writer comes, and would hang
/// the daemon's reconcile loop there. Regular files read as usual.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

/// What a path that is neither a file nor a directory is, for errors.
fn special_kind(m: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    let t = m.file_type();
    if t.is_fifo() {
        "FIFO (named pipe)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// The position just after `text` (1-based, columns in characters; lines
/// as YAML counts them, like every other position of an error).
fn position_after(text: &str) -> Pos {
    let widths = line_widths(text);
    Pos::new(widths.len(), widths.last().map_or(0, |w| *w) + 1)
}

/// The drop-in files of `dir`: `*.yaml` and `*.yml`, in lexical order of
/// their names, not recursive. Hidden entries are skipped, which also skips
/// the `..data` and `..2024_01_01_...` entries of a Kubernetes ConfigMap
/// mount (its visible files are symlinks through `..data`, and are
/// followed).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        PolicyError::new(dir, format!("cannot read policy directory: {e}"))
            .hint("check the path and its permissions")
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry
            .map_err(|e| PolicyError::new(dir, format!("cannot read policy directory: {e}")))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // not UTF-8, so not `*.yaml`
        };
        if name.starts_with('.') || !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        // fs::metadata follows symlinks: a ConfigMap key is a symlink to a
        // file. A directory that happens to be called x.yaml is not a policy.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => continue,
            _ => files.push(path), // unreadable: `read` reports why
        }
    }
    // Lexical order of the file names (bytes), as `ls` in the C locale and
    // systemd drop-ins: `10-a.yaml` before `20-b.yaml`.
    files.sort();
    if files.is_empty() {
        return Err(
            PolicyError::new(dir, format!("no *.yaml files in {}", dir.display()))
                .hint("put at least one policy file (NAME.yaml) in the directory"),
        );
    }
    Ok(files)
}

/// True for a file with no YAML content: empty, blank, or only comments
/// and document markers. yaml_serde reads such a file as an empty mapping,
/// which would surface as a confusing "missing field `version`".
fn is_blank(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').lines().all(|line| {
        let t = line.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    })
}

/// Parses one file's text. A syntax error stops it (the rest of the
/// document cannot be trusted); value and type errors are all reported.
pub(crate) fn parse(path: PathBuf, text: &str) -> Result<SourceFile, PolicyErrors> {
    if is_blank(text) {
        return Err(PolicyError::new(&path, "empty policy file")
            .hint("a policy needs at least `version: 1`; see examples/policies/quickstart.yaml")
            .into());
    }
    let policy: Policy = yaml_serde::from_str(text)
        .map_err(|e| PolicyErrors(every::every_error(&path, text, &e)))?;
    // The document parsed, so walking it again cannot fail; if it somehow
    // does, errors lose their positions rather than the policy failing.
    let tree = locate::build(text).unwrap_or_else(Node::empty);
    Ok(SourceFile { path, policy, tree })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_files() {
        for blank in [
            "",
            "\n\n",
            "# only\n  # comments\n",
            "---\n# x\n...\n",
            "\u{feff}",
        ] {
            assert!(is_blank(blank), "{blank:?}");
        }
        assert!(!is_blank("version: 1\n"));
        assert!(!is_blank("# c\n~\n"));
    }

    #[test]
    fn positions_after_text() {
        assert_eq!(position_after(""), Pos::new(1, 1));
        assert_eq!(position_after("ab"), Pos::new(1, 3));
        assert_eq!(position_after("a\nbé"), Pos::new(2, 3));
        // A lone CR ends a line for YAML (found by fuzzing: the UTF-8
        // error was placed on line 1 of a file libyaml sees as two lines).
        assert_eq!(position_after("a\rb"), Pos::new(2, 2));
    }

    #[test]
    fn invalid_utf8_is_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, b"version: 1\nchains:\n  - name: \xff\n").unwrap();
        let err = read(&path).unwrap_err();
        assert_eq!(err.message, "policy file is not valid UTF-8");
        assert_eq!((err.line, err.column), (Some(3), Some(11)));
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("10-pipe.yaml");
        nix_mkfifo(&path);
        // With a blocking open this would wait for a writer forever: run
        // it on a thread and give it far more than a non-blocking open needs.
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        std::thread::spawn(move || tx.send(read(&p).map_err(|e| e.message)));
        let got = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading a FIFO blocked");
        assert_eq!(
            got.unwrap_err(),
            "is a FIFO (named pipe), not a regular file"
        );
        // The drop-in directory lists it, and loading the directory names it.
        std::fs::write(dir.path().join("00-base.yaml"), "version: 1\n").unwrap();
        let errs = crate::load_dir(dir.path()).unwrap_err();
        assert!(
            errs.0
                .iter()
                .any(|e| e.file == path && e.message.contains("FIFO")),
            "{errs:?}"
        );
    }

    fn nix_mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[test]
    fn oversized_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            read(&path)
                .unwrap_err()
                .message
                .contains("larger than the limit of 1 MiB")
        );
        std::fs::write(&path, vec![b'#'; MAX_FILE_BYTES as usize]).unwrap();
        assert!(read(&path).is_ok());
    }

    #[test]
    fn directory_listing_filters_and_sorts() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "20-b.yaml",
            "10-a.yml",
            ".hidden.yaml",
            "notes.txt",
            "..data",
        ] {
            std::fs::write(dir.path().join(name), "version: 1\n").unwrap();
        }
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let names: Vec<_> = list_dir(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["10-a.yml", "20-b.yaml"]);
    }

    #[test]
    fn empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = list_dir(dir.path()).unwrap_err();
        assert!(err.message.starts_with("no *.yaml files in "));
        assert_eq!(err.line, None);
    }
}
