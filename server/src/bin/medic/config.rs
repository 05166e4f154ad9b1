//! Where the server and the key come from: flags, then the environment (both through clap),
//! then a profile of `$XDG_CONFIG_HOME/medic/config.toml` (`~/.config/medic/config.toml`).
//!
//! ```toml
//! default_profile = "prod"
//!
//! [profiles.prod]
//! server = "https://medic.example.com"
//! api_key = "mdk_…"
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Cli;
use crate::client::{Client, Failure};

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct File {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

/// The configuration file's path.
pub fn path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => PathBuf::from(std::env::var_os("HOME").filter(|v| !v.is_empty())?).join(".config"),
    };
    Some(base.join("medic").join("config.toml"))
}

pub fn load() -> Result<File, Failure> {
    let Some(p) = path() else {
        return Ok(File::default());
    };
    match std::fs::read_to_string(&p) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(File::default()),
        Err(e) => Err(Failure::Other(format!("cannot read {}: {e}", p.display()))),
    }
}

/// The settings a command runs with.
#[derive(Debug, Clone)]
pub struct Context {
    pub server: String,
    pub api_key: Option<String>,
}

impl Context {
    pub fn resolve(cli: &Cli) -> Result<Self, Failure> {
        let file = load()?;
        let name = cli
            .profile
            .clone()
            .or(file.default_profile.clone())
            .unwrap_or_else(|| "default".to_owned());
        let profile = match file.profiles.get(&name) {
            Some(p) => p.clone(),
            None if cli.profile.is_some() => {
                return Err(Failure::Usage(format!(
                    "no profile {name:?} in {}",
                    path().map(|p| p.display().to_string()).unwrap_or_default()
                )));
            }
            None => Profile::default(),
        };
        let server = cli.server.clone().or(profile.server).ok_or_else(|| {
            Failure::Usage(
                "no server: pass --server URL, set MEDIC_URL, or run `medic login`".to_owned(),
            )
        })?;
        let api_key = cli
            .api_key
            .clone()
            .or(profile.api_key)
            .filter(|k| !k.is_empty());
        Ok(Self { server, api_key })
    }

    /// A client for routes that need no key.
    pub fn client_any(&self) -> Result<Client, Failure> {
        Client::new(&self.server, self.api_key.clone(), Duration::from_secs(30))
    }

    /// A client that needs a key.
    pub fn client(&self) -> Result<Client, Failure> {
        if self.api_key.is_none() {
            return Err(Failure::Auth(
                "no API key: pass --api-key, set MEDIC_API_KEY, or run `medic login`".to_owned(),
            ));
        }
        Client::new(&self.server, self.api_key.clone(), Duration::from_secs(30))
    }
}

#[derive(Debug, clap::Args)]
pub struct LoginArgs {}

/// Reads a key (hidden on a terminal, else one line of standard input), checks it against the
/// server and stores it in the profile with mode 0600.
pub fn login(cli: &Cli, _args: &LoginArgs) -> Result<(), Failure> {
    let mut file = load()?;
    let name = cli
        .profile
        .clone()
        .or(file.default_profile.clone())
        .unwrap_or_else(|| "default".to_owned());
    let existing = file.profiles.get(&name).cloned().unwrap_or_default();
    let server = cli.server.clone().or(existing.server).ok_or_else(|| {
        Failure::Usage("no server: pass --server URL or set MEDIC_URL".to_owned())
    })?;
    let key = match cli.api_key.clone() {
        Some(k) => k,
        None if std::io::stdin().is_terminal() => rpassword::prompt_password("API key: ")
            .map_err(|e| Failure::Other(format!("cannot read the key: {e}")))?,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Failure::Other(format!("cannot read the key: {e}")))?;
            line
        }
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(Failure::Usage("no API key given".to_owned()));
    }
    // Any authenticated read proves the key; 403 means valid but without the read scope.
    let client = Client::new(&server, Some(key.clone()), Duration::from_secs(15))?;
    match client.get("/v2/services?limit=1") {
        Ok(_) => {}
        Err(Failure::Auth(m)) if m.contains("HTTP 403") => {
            eprintln!("medic: the key is valid but cannot read services: {m}");
        }
        Err(e) => return Err(e),
    }
    file.profiles.insert(
        name.clone(),
        Profile {
            server: Some(server.clone()),
            api_key: Some(key),
        },
    );
    let p = save(&file)?;
    outln!(
        "Logged in to {server} as profile {name:?} ({}).",
        p.display()
    );
    Ok(())
}

/// Writes the file readable by its owner only (the directory too).
pub fn save(file: &File) -> Result<PathBuf, Failure> {
    let p = path().ok_or_else(|| {
        Failure::Other("no configuration directory: set HOME or XDG_CONFIG_HOME".to_owned())
    })?;
    let err = |e: std::io::Error| Failure::Other(format!("cannot write {}: {e}", p.display()));
    let dir = p.parent().expect("config path has a directory");
    let text = toml::to_string(file).map_err(|e| Failure::Other(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        let tmp = dir.join(".config.toml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &p).map_err(err)?;
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::write(&p, text).map_err(err)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips() {
        let text = "default_profile = \"prod\"\n[profiles.prod]\nserver = \"https://m\"\napi_key = \"k\"\n";
        let f: File = toml::from_str(text).unwrap();
        assert_eq!(f.default_profile.as_deref(), Some("prod"));
        assert_eq!(f.profiles["prod"].api_key.as_deref(), Some("k"));
        let again: File = toml::from_str(&toml::to_string(&f).unwrap()).unwrap();
        assert_eq!(again.profiles["prod"].server.as_deref(), Some("https://m"));
    }
}
