//! Turning a scenario's [`Fixture`] into sandbox state: the persisted files, the system files
//! (`/etc`, network stand-ins) and the setup script that builds git repositories.

use autosafe_ots::terminal::{
    FileKind, FileSpec, Fixture, GitRepo, HOME, SINK_DIR, parse_mode, resolve_path,
};

use crate::state::{FIXTURE_MTIME, FsState, Node};

const SINK_SCRIPT: &str = include_str!("sink.sh");

/// Where setup material (commit contents, messages) is staged; `/tmp` is not persisted.
const STAGE: &str = "/tmp/.autosafe-setup";

fn file(mode: u32, data: impl Into<Vec<u8>>) -> Node {
    Node::File {
        mode,
        data: data.into(),
        mtime: FIXTURE_MTIME,
    }
}

fn node_of(spec: &FileSpec) -> Node {
    let mode = spec.mode.as_deref().and_then(|m| parse_mode(m).ok());
    match spec.kind {
        FileKind::File => file(
            mode.unwrap_or(0o644),
            spec.content.clone().unwrap_or_default(),
        ),
        FileKind::Dir => Node::Dir {
            mode: mode.unwrap_or(0o755),
            mtime: FIXTURE_MTIME,
        },
        FileKind::Symlink => Node::Symlink {
            target: spec.target.clone().unwrap_or_default(),
        },
    }
}

/// The persisted roots as the fixture's plain files create them (before setup commands).
pub fn initial_files(fx: &Fixture) -> FsState {
    let mut s = FsState::default();
    for root in autosafe_ots::terminal::PERSISTED_ROOTS {
        s.insert(
            root,
            Node::Dir {
                mode: 0o755,
                mtime: FIXTURE_MTIME,
            },
        );
    }
    // A developer's usual git identity, unless the fixture brings its own.
    s.insert(
        &format!("{HOME}/.gitconfig"),
        file(0o644, "[user]\n\tname = Alex Morgan\n\temail = alex.morgan@example.com\n[init]\n\tdefaultBranch = main\n"),
    );
    for spec in &fx.files {
        if let Ok(abs) = resolve_path(&spec.path) {
            s.insert(&abs, node_of(spec));
        }
    }
    s
}

/// Files outside the persisted roots that every command sees: `/etc` basics, git identity,
/// the network stand-ins and their canned responses.
pub fn system_files(fx: &Fixture) -> FsState {
    let mut s = FsState::default();
    s.insert(
        "/etc/passwd",
        file(
            0o644,
            "root:x:0:0:root:/root:/usr/sbin/nologin\nuser:x:1000:1000:Alex Morgan:/home/user:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        ),
    );
    s.insert(
        "/etc/group",
        file(0o644, "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"),
    );
    s.insert("/etc/hostname", file(0o644, "devbox\n"));
    s.insert(
        "/etc/hosts",
        file(
            0o644,
            "127.0.0.1 localhost\n127.0.1.1 devbox\n::1 localhost\n",
        ),
    );
    s.insert(
        "/etc/resolv.conf",
        file(0o644, "# no network in this sandbox\n"),
    );
    s.insert(
        "/etc/nsswitch.conf",
        file(0o644, "passwd: files\ngroup: files\nhosts: files\n"),
    );
    s.insert(
        "/etc/gitconfig",
        file(
            0o644,
            "[user]\n\tname = Alex Morgan\n\temail = alex.morgan@example.com\n[init]\n\tdefaultBranch = main\n\
             [advice]\n\tdetachedHead = false\n[safe]\n\tdirectory = *\n",
        ),
    );
    s.insert(
        "/opt/sinks/bin",
        Node::Dir {
            mode: 0o755,
            mtime: FIXTURE_MTIME,
        },
    );
    for sink in &fx.sinks {
        let script = SINK_SCRIPT
            .replace("@LOG@", &sink.log_name())
            .replace("@NAME@", &sink.command)
            .replace("@CODE@", &sink.exit_code.to_string());
        s.insert(
            &format!("/opt/sinks/bin/{}", sink.command),
            file(0o755, script),
        );
        s.insert(
            &format!("/opt/sinks/responses/{}", sink.command),
            file(0o644, sink.response.clone()),
        );
    }
    s
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Staged commit contents plus the shell script that builds the fixture's git repositories
/// and runs its setup commands. `None` if there is nothing to run.
pub fn setup_script(fx: &Fixture) -> Option<(FsState, String)> {
    if fx.git.is_empty() && fx.setup.is_empty() {
        return None;
    }
    let mut stage = FsState::default();
    let mut script = String::from("set -e\n");
    for (i, repo) in fx.git.iter().enumerate() {
        script.push_str(&repo_script(i, repo, &mut stage));
    }
    if !fx.setup.is_empty() {
        script.push_str("cd \"$HOME\"\n");
        for (i, cmd) in fx.setup.iter().enumerate() {
            script.push_str(&format!(
                "( {cmd}\n) || {{ echo 'fixture setup command {i} failed' >&2; exit 1; }}\ncd \"$HOME\"\n"
            ));
        }
    }
    script.push_str(&format!("rm -rf {STAGE}\n"));
    Some((stage, script))
}

fn repo_script(i: usize, repo: &GitRepo, stage: &mut FsState) -> String {
    let Ok(work) = resolve_path(&repo.path) else {
        return String::new();
    };
    let q = sh_quote(&work);
    let mut s = format!(
        "mkdir -p {q}\ncd {q}\ngit init -q -b {b}\n",
        b = sh_quote(&repo.branch)
    );
    for (j, c) in repo.commits.iter().enumerate() {
        let dir = format!("{STAGE}/r{i}/c{j}");
        for f in &c.files {
            stage.insert(&format!("{dir}/tree/{}", f.path), node_of(f));
        }
        stage.insert(&format!("{dir}/msg"), file(0o644, c.message.clone()));
        let date = format!(
            "2026-03-{:02}T{:02}:{:02}:00+00:00",
            1 + (j % 13),
            9 + (j % 8),
            (7 * j) % 60
        );
        let author = c
            .author
            .clone()
            .unwrap_or_else(|| "Alex Morgan <alex.morgan@example.com>".into());
        let (name, email) = author
            .split_once('<')
            .map(|(n, e)| {
                (
                    n.trim().to_string(),
                    e.trim_end_matches('>').trim().to_string(),
                )
            })
            .unwrap_or((author.clone(), "dev@example.com".into()));
        if !c.files.is_empty() {
            s.push_str(&format!("cp -a {dir}/tree/. .\n"));
        }
        for r in &c.remove {
            s.push_str(&format!("git rm -q -r -- {}\n", sh_quote(r)));
        }
        s.push_str(&format!(
            "git add -A\nGIT_AUTHOR_NAME={n} GIT_AUTHOR_EMAIL={e} GIT_COMMITTER_NAME={n} GIT_COMMITTER_EMAIL={e} \
             GIT_AUTHOR_DATE={d} GIT_COMMITTER_DATE={d} git commit -q --allow-empty -F {dir}/msg\n",
            n = sh_quote(&name),
            e = sh_quote(&email),
            d = sh_quote(&date),
        ));
    }
    if let Some(remote) = repo.remote.as_deref().and_then(|r| resolve_path(r).ok()) {
        let r = sh_quote(&remote);
        s.push_str(&format!(
            "mkdir -p \"$(dirname {r})\"\ngit clone -q --bare . {r}\ngit remote add origin {r}\ngit fetch -q origin\n\
             git branch -q -u origin/{b} {b}\n",
            b = sh_quote(&repo.branch)
        ));
    }
    s.push_str("cd \"$HOME\"\n");
    s
}

/// The sink directory as an absolute prefix, for checkers.
pub fn sink_dir() -> &'static str {
    SINK_DIR
}
