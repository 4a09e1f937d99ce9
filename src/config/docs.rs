//! The settings' documentation, made from the table so it cannot drift: the packaged
//! config.toml (`config --default-file`) and the README's table (`config --markdown`).
//! Tests compare both with the files in the repository.

use super::KEYS;

/// The packaged `/etc/sbps-marshal/config.toml`: every key, commented out at its
/// default, with what it means (`sbps-marshal config --default-file` prints it).
pub(crate) fn default_file() -> String {
    let mut out = String::from(
        "# sbps-marshal settings. Every key is shown at its default, commented out.\n\
         # Precedence: --set KEY=VALUE > SBPS_MARSHAL_<KEY> environment > this file > default.\n",
    );
    for k in KEYS {
        out.push_str(&format!("\n# {}\n", k.help));
        if !k.compat.is_empty() {
            out.push_str(&format!(
                "# Compared with the original agent: {}.\n",
                k.compat
            ));
        }
        let value = if k.kind.is_bare_in_toml() {
            k.default.to_string()
        } else {
            format!("{:?}", k.default)
        };
        out.push_str(&format!("# {} = {value}\n", k.name.to_ascii_lowercase()));
    }
    out
}

/// The README's table of settings, one row per key in the table's order
/// (`sbps-marshal config --markdown` prints it).
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key (`SBPS_MARSHAL_` + …) | default | meaning | compared with the original |\n\
         |---|---|---|---|\n",
    );
    for k in KEYS {
        let default = if k.default.is_empty() {
            "(empty)".to_string()
        } else {
            format!("`{}`", k.default)
        };
        let compat = if k.compat.is_empty() {
            "same"
        } else {
            k.compat
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} | {compat} |\n",
            k.name, k.help
        ));
    }
    out
}
