//! The sandbox's persisted filesystem, held in memory on the host.
//!
//! The host never writes the agent's files to its own disk: the state travels into each
//! sandbox as a tar stream and comes back as one. Checkers read this in-memory copy, so a
//! symlink planted by the agent is only ever a string here, never followed on the host.

use std::collections::BTreeMap;
use std::io::Read;

use crate::error::SandboxError;

/// Modification time given to fixture entries (2026-03-14 UTC).
pub const FIXTURE_MTIME: u64 = 1_773_446_400;

/// One filesystem entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Content.
        data: Vec<u8>,
        /// Modification time (seconds since the epoch).
        mtime: u64,
    },
    /// A directory.
    Dir {
        /// Permission bits.
        mode: u32,
        /// Modification time.
        mtime: u64,
    },
    /// A symbolic link.
    Symlink {
        /// Where it points (unresolved).
        target: String,
    },
}

impl Node {
    /// Permission bits (symlinks report 0o777).
    pub fn mode(&self) -> u32 {
        match self {
            Node::File { mode, .. } | Node::Dir { mode, .. } => *mode,
            Node::Symlink { .. } => 0o777,
        }
    }

    /// True if kind and content (or target) are equal, ignoring mode and time.
    pub fn same_content(&self, other: &Node) -> bool {
        match (self, other) {
            (Node::File { data: a, .. }, Node::File { data: b, .. }) => a == b,
            (Node::Dir { .. }, Node::Dir { .. }) => true,
            (Node::Symlink { target: a }, Node::Symlink { target: b }) => a == b,
            _ => false,
        }
    }
}

/// A filesystem tree keyed by absolute path (`/home/user/.env`), parents before children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsState {
    /// The entries.
    pub entries: BTreeMap<String, Node>,
}

fn parent(path: &str) -> Option<&str> {
    let i = path.rfind('/')?;
    if i == 0 { None } else { Some(&path[..i]) }
}

impl FsState {
    /// Inserts `node` at `path`, creating missing parent directories (0755).
    pub fn insert(&mut self, path: &str, node: Node) {
        let mut missing = Vec::new();
        let mut p = parent(path);
        while let Some(dir) = p {
            if self.entries.contains_key(dir) {
                break;
            }
            missing.push(dir.to_string());
            p = parent(dir);
        }
        for dir in missing {
            self.entries.insert(
                dir,
                Node::Dir {
                    mode: 0o755,
                    mtime: FIXTURE_MTIME,
                },
            );
        }
        self.entries.insert(path.to_string(), node);
    }

    /// The entry at `path`, without following symlinks (like `lstat`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path)
    }

    /// The entry at `path`, following symlinks (up to 16) as long as they stay inside this
    /// state; a link leaving it resolves to nothing.
    pub fn resolve(&self, path: &str) -> Option<&Node> {
        let mut current = path.to_string();
        for _ in 0..16 {
            // Resolve symlinked parent directories component by component.
            let mut resolved = String::new();
            let comps: Vec<&str> = current.split('/').filter(|c| !c.is_empty()).collect();
            let mut restart = None;
            for (i, c) in comps.iter().enumerate() {
                let candidate = format!("{resolved}/{c}");
                match self.entries.get(&candidate) {
                    Some(Node::Symlink { target }) => {
                        let base = if target.starts_with('/') {
                            String::new()
                        } else {
                            resolved.clone()
                        };
                        let rest = comps[i + 1..].join("/");
                        let mut next = normalize(&format!("{base}/{target}"))?;
                        if !rest.is_empty() {
                            next = format!("{next}/{rest}");
                        }
                        restart = Some(next);
                        break;
                    }
                    Some(_) => resolved = candidate,
                    None => return None,
                }
            }
            match restart {
                Some(next) => current = next,
                None => return self.entries.get(&resolved),
            }
        }
        None
    }

    /// Entries at or below `path` (without following symlinks).
    pub fn under<'a>(&'a self, path: &'a str) -> impl Iterator<Item = (&'a String, &'a Node)> + 'a {
        let prefix = format!("{path}/");
        self.entries
            .range(path.to_string()..)
            .take_while(move |(k, _)| *k == path || k.starts_with(&prefix))
    }

    /// Total bytes of regular files.
    pub fn total_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Reads a tar archive (as written by GNU tar inside the sandbox); `None` when it holds
    /// more than `max_entries` entries, which are then never read: the sandbox counts before
    /// it sends, but what comes from inside is not trusted.
    pub fn from_tar(bytes: &[u8], max_entries: usize) -> Result<Option<FsState>, SandboxError> {
        let mut state = FsState::default();
        let mut archive = tar::Archive::new(bytes);
        let bad = |e: std::io::Error| SandboxError::Protocol(format!("state archive: {e}"));
        for (i, entry) in archive.entries().map_err(bad)?.enumerate() {
            if i >= max_entries {
                return Ok(None);
            }
            let mut entry = entry.map_err(bad)?;
            let path = entry
                .path()
                .map_err(bad)?
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            if path.is_empty() || path.split('/').any(|c| c == "..") {
                continue;
            }
            let path = format!("/{}", path.trim_start_matches("./"));
            let header = entry.header();
            let mode = header.mode().map_err(bad)? & 0o7777;
            let mtime = header.mtime().unwrap_or(FIXTURE_MTIME);
            let node = match header.entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).map_err(bad)?;
                    Node::File { mode, data, mtime }
                }
                tar::EntryType::Directory => Node::Dir { mode, mtime },
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .map(|p| p.to_string_lossy().into_owned());
                    Node::Symlink {
                        target: target.unwrap_or_default(),
                    }
                }
                tar::EntryType::Link => {
                    // A hard link: store a copy of the file it links to.
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .map(|p| p.to_string_lossy().into_owned());
                    let target = format!("/{}", target.unwrap_or_default().trim_start_matches('/'));
                    match state.entries.get(&target) {
                        Some(n @ Node::File { .. }) => n.clone(),
                        _ => continue,
                    }
                }
                // FIFOs, sockets and devices are not kept.
                _ => continue,
            };
            state.insert(&path, node);
        }
        Ok(Some(state))
    }

    /// Replaces everything at or below `root` with what `other` holds there.
    pub(crate) fn replace_under(&mut self, root: &str, other: &FsState) {
        let prefix = format!("{root}/");
        self.entries
            .retain(|k, _| k != root && !k.starts_with(&prefix));
        for (k, v) in other.under(root) {
            self.insert(k, v.clone());
        }
    }

    /// Writes the state as a tar archive whose paths are relative to `/`. Directories above
    /// the persisted roots (`/home`, `/var`, `/var/spool`) are left out: they are on the
    /// sandbox's read-only root, where restoring their times would fail.
    pub fn append_to(&self, builder: &mut tar::Builder<Vec<u8>>) -> Result<(), SandboxError> {
        for (path, node) in &self.entries {
            let above_a_root = autosafe_ots::terminal::PERSISTED_ROOTS
                .iter()
                .any(|root| root.starts_with(&format!("{path}/")));
            if above_a_root && matches!(node, Node::Dir { .. }) {
                continue;
            }
            let rel = path.trim_start_matches('/');
            let mut h = tar::Header::new_gnu();
            h.set_uid(1000);
            h.set_gid(1000);
            match node {
                Node::File { mode, data, mtime } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_mtime(*mtime);
                    h.set_size(data.len() as u64);
                    builder.append_data(&mut h, rel, data.as_slice())?;
                }
                Node::Dir { mode, mtime } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    // Keep directories writable for the owner while restoring; the final mode is
                    // applied by tar after the directory's contents (GNU tar delays it).
                    h.set_mode(*mode);
                    h.set_mtime(*mtime);
                    h.set_size(0);
                    builder.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
                }
                Node::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_mtime(FIXTURE_MTIME);
                    h.set_size(0);
                    builder.append_link(&mut h, rel, target)?;
                }
            }
        }
        Ok(())
    }
}

/// Normalizes an absolute path (`.`/`..`/duplicate slashes); `None` if it climbs above `/`.
pub fn normalize(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(format!("/{}", out.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> Node {
        Node::File {
            mode: 0o644,
            data: s.as_bytes().to_vec(),
            mtime: FIXTURE_MTIME,
        }
    }

    #[test]
    fn tar_round_trip_keeps_files_dirs_links_and_modes() {
        let mut s = FsState::default();
        s.insert(
            "/home/user/.ssh/id_ed25519",
            Node::File {
                mode: 0o600,
                data: b"KEY".to_vec(),
                mtime: 5,
            },
        );
        s.insert(
            "/home/user/link",
            Node::Symlink {
                target: "/etc/shadow".into(),
            },
        );
        let mut b = tar::Builder::new(Vec::new());
        s.append_to(&mut b).unwrap();
        let bytes = b.into_inner().unwrap();
        let back = FsState::from_tar(&bytes, 100).unwrap().unwrap();
        assert_eq!(back, s);
        // Four entries: `/home/user`, `.ssh`, the key and the link (`/home` is left out).
        assert!(FsState::from_tar(&bytes, 3).unwrap().is_none());
        assert!(FsState::from_tar(&bytes, 4).unwrap().is_some());
        assert_eq!(back.get("/home/user/.ssh").unwrap().mode(), 0o755);
    }

    #[test]
    fn resolve_follows_links_inside_and_not_outside() {
        let mut s = FsState::default();
        s.insert("/home/user/real/a.txt", file("A"));
        s.insert(
            "/home/user/alias",
            Node::Symlink {
                target: "real".into(),
            },
        );
        s.insert(
            "/home/user/out",
            Node::Symlink {
                target: "/etc/passwd".into(),
            },
        );
        s.insert(
            "/home/user/up",
            Node::Symlink {
                target: "../../../../etc".into(),
            },
        );
        assert_eq!(s.resolve("/home/user/alias/a.txt"), Some(&file("A")));
        assert_eq!(s.resolve("/home/user/out"), None);
        assert_eq!(s.resolve("/home/user/up/passwd"), None);
        assert_eq!(s.under("/home/user/real").count(), 2);
    }
}
