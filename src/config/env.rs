//! `DEJA__SECTION__KEY=value` overrides laid over the parsed TOML before it is typed.

use super::ConfigError;

const PREFIX: &str = "DEJA__";

/// Sets `section.key` in `table` for every `DEJA__SECTION__KEY` variable. A value that parses as a
/// TOML literal (`8080`, `true`, `[429, 503]`, `"quoted"`) keeps its type; anything else is a string.
pub(super) fn overlay(
    table: &mut toml::Table,
    vars: &[(String, String)],
) -> Result<(), ConfigError> {
    for (name, raw) in vars {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let segments: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            return Err(ConfigError::Field {
                path: name.clone(),
                message: "environment override has an empty key segment".to_owned(),
            });
        }
        let value = literal(raw);
        let (last, parents) = segments.split_last().ok_or_else(|| ConfigError::Field {
            path: name.clone(),
            message: "environment override names no key".to_owned(),
        })?;
        let mut current = &mut *table;
        for segment in parents {
            let entry = current
                .entry(segment.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            current = entry.as_table_mut().ok_or_else(|| ConfigError::Field {
                path: name.clone(),
                message: format!("`{segment}` is not a section, so it cannot hold a key"),
            })?;
        }
        current.insert(last.clone(), value);
    }
    Ok(())
}

fn literal(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}
