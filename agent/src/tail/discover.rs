//! Finds the files that sources follow: include globs minus exclude globs,
//! plus the directories to watch for filesystem events.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::config::SourceConfig;
use crate::tail::checkpoint::FileId;

#[derive(Debug)]
pub struct Matcher {
    sources: Vec<(Vec<String>, Vec<glob::Pattern>)>,
}

#[derive(Debug, Clone)]
pub struct Found {
    pub source: usize,
    pub path: PathBuf,
    pub id: FileId,
}

impl Matcher {
    /// Globs were validated with the config; an invalid exclude is skipped.
    pub fn new(sources: &[SourceConfig]) -> Matcher {
        Matcher {
            sources: sources
                .iter()
                .map(|s| {
                    let excludes = s
                        .exclude
                        .iter()
                        .filter_map(|g| glob::Pattern::new(g).ok())
                        .collect();
                    (s.include.clone(), excludes)
                })
                .collect(),
        }
    }

    /// Every regular file matched now, each once (the first source that
    /// matches it owns it), in path order.
    pub fn scan(&self) -> Vec<Found> {
        let mut found: Vec<Found> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (source, (includes, excludes)) in self.sources.iter().enumerate() {
            for pattern in includes {
                let Ok(paths) = glob::glob(pattern) else {
                    continue;
                };
                for path in paths.flatten() {
                    if excludes.iter().any(|e| e.matches_path(&path)) {
                        continue;
                    }
                    let Ok(meta) = std::fs::metadata(&path) else {
                        continue;
                    };
                    if !meta.is_file() {
                        continue;
                    }
                    let id = FileId {
                        dev: meta.dev(),
                        ino: meta.ino(),
                    };
                    if seen.insert(id) {
                        found.push(Found { source, path, id });
                    }
                }
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        found
    }

    /// The deepest directory of each include glob that has no wildcard, and
    /// whether the glob reaches below it.
    pub fn watch_roots(&self) -> Vec<(PathBuf, bool)> {
        let mut roots: Vec<(PathBuf, bool)> = Vec::new();
        for (includes, _) in &self.sources {
            for pattern in includes {
                let (root, rest) = split_fixed_prefix(Path::new(pattern));
                let recursive = rest > 1;
                if !roots.iter().any(|(r, rec)| *r == root && *rec == recursive) {
                    roots.push((root, recursive));
                }
            }
        }
        roots
    }
}

/// Splits a glob into its wildcard-free directory prefix and the number of
/// components after it.
fn split_fixed_prefix(pattern: &Path) -> (PathBuf, usize) {
    let mut root = PathBuf::new();
    let components: Vec<Component> = pattern.components().collect();
    let mut i = 0;
    while i + 1 < components.len() {
        let c = components[i].as_os_str().to_string_lossy();
        if c.contains(['*', '?', '[']) {
            break;
        }
        root.push(components[i]);
        i += 1;
    }
    (root, components.len() - i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_roots_stop_at_the_first_wildcard() {
        assert_eq!(
            split_fixed_prefix(Path::new("/var/log/app/*.log")),
            ("/var/log/app".into(), 1)
        );
        assert_eq!(
            split_fixed_prefix(Path::new("/var/log/*/x.log")),
            ("/var/log".into(), 2)
        );
        assert_eq!(
            split_fixed_prefix(Path::new("/var/log/a.log")),
            ("/var/log".into(), 1)
        );
    }

    #[test]
    fn excludes_and_first_source_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in ["a.log", "b.log", "c.txt"] {
            std::fs::write(dir.path().join(f), "x\n").expect("write");
        }
        let glob = format!("{}/*", dir.path().display());
        let sources = vec![
            SourceConfig {
                include: vec![glob.clone()],
                exclude: vec!["*.txt".into()],
                ..SourceConfig::default()
            },
            SourceConfig {
                include: vec![glob],
                ..SourceConfig::default()
            },
        ];
        let found = Matcher::new(&sources).scan();
        let got: Vec<_> = found
            .iter()
            .map(|f| {
                (
                    f.source,
                    f.path
                        .file_name()
                        .expect("name")
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, "a.log".into()),
                (0, "b.log".into()),
                (1, "c.txt".into())
            ]
        );
    }
}
