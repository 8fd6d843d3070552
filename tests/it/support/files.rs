//! Config files in a temporary directory, for tests that reload from a file (the app re-reads
//! the file it started from, exactly as SIGHUP does in production).

use std::path::{Path, PathBuf};

pub struct ConfigFile {
    dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl ConfigFile {
    /// A directory with `config.yaml` holding `yaml`.
    pub fn new(yaml: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.yaml");
        let file = ConfigFile { dir, path };
        file.write(yaml);
        file
    }

    /// Replaces the file's content atomically (write + rename), like a config manager would,
    /// so a concurrent reader never sees half a file.
    pub fn write(&self, yaml: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        std::fs::write(&tmp, yaml).expect("write config");
        std::fs::rename(&tmp, &self.path).expect("rename config");
    }

    /// Writes another file next to the config (a token file, a secret).
    pub fn write_sibling(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).expect("write sibling");
        path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
