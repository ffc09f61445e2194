//! `novactl completions SHELL` as a user installs it: the bash script the
//! real binary prints, sourced into a real bash and asked to complete a
//! partial command line, the way bash's `complete -F` asks it.

use std::process::Command;

fn script(shell: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .args(["completions", shell])
        .output()
        .expect("novactl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What bash offers for `words`, the last one being completed.
fn complete(script: &str, words: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("novactl.bash");
    std::fs::write(&path, script).unwrap();
    let line = words.join(" ");
    let probe = format!(
        "source {path}; COMP_WORDS=({line}); COMP_CWORD={cword}; COMP_LINE='{line}'; \
         COMP_POINT=${{#COMP_LINE}}; _novactl novactl '{current}' '{previous}'; \
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        path = path.display(),
        cword = words.len() - 1,
        current = words[words.len() - 1],
        previous = words[words.len() - 2],
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_verbs_and_their_arguments() {
    let (code, bash, stderr) = script("bash");
    assert_eq!(code, Some(0), "{stderr}");
    let cases: [(&[&str], &[&str]); 3] = [
        (&["novactl", "pro"], &["promote", "provision"]),
        (&["novactl", "emergency", "--re"], &["--reason"]),
        (&["novactl", "completions", "f"], &["fish"]),
    ];
    for (words, want) in cases {
        let mut got = complete(&bash, words);
        got.sort();
        assert_eq!(got, want, "{words:?}");
    }
}

#[test]
fn every_shell_gets_a_script_and_an_unknown_one_a_clear_error() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, stderr) = script(shell);
        assert_eq!(code, Some(0), "{shell}: {stderr}");
        assert!(
            out.contains("novactl") && out.contains("promote"),
            "{shell}"
        );
    }
    let (code, out, stderr) = script("tcsh");
    assert_eq!(code, Some(2));
    assert!(out.is_empty());
    assert!(
        stderr.contains("invalid value 'tcsh'")
            && stderr.contains("bash, elvish, fish, powershell, zsh"),
        "{stderr}"
    );
}
