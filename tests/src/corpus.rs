//! The committed hostile inputs, `tests/corpus/hostile/`: each file with the
//! subject kind it is sent as and the outcome it must have (`cases.txt`,
//! described in the folder's README).

use std::path::Path;

/// One case of `cases.txt`.
pub struct Case {
    /// The file's name.
    pub file: String,
    /// `sample` or `control`.
    pub kind: String,
    /// `refused: <reason text>`, `elements: <ok>/<refused>` or `accepted`.
    pub expected: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl Case {
    /// Whether the file is JSON (sent with `Content-Type: application/json`).
    pub fn is_json(&self) -> bool {
        self.file.ends_with(".json")
    }

    /// How many good samples the case holds beside bad ones.
    pub fn good_elements(&self) -> usize {
        self.expected
            .strip_prefix("elements: ")
            .and_then(|counts| counts.split('/').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

/// Every case, in file order.
pub fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/hostile");
    let listing = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split('|').map(str::trim).collect();
            let [file, kind, expected] = fields[..] else {
                panic!("cases.txt: expected `file | kind | expected`, found {line:?}");
            };
            let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            Case {
                file: file.into(),
                kind: kind.into(),
                expected: expected.into(),
                bytes,
            }
        })
        .collect()
}
