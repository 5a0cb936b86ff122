//! `deja eval`: loads the config's model and the route's guards, runs the pairs or the replay,
//! prints the report, and optionally plots it and writes the chosen threshold into the config.

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::pairs::{self, Judged, Rates};
use super::report::{self, GroupSweep};
use super::{EvalError, replay, thresholds, verified};
use crate::cache::verifier::Verifier;
use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::embedding::onnx::OnnxEmbedder;

/// What `deja eval` was asked to do.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    /// Config file; default `./deja.toml` when present.
    pub config: Option<PathBuf>,
    /// Route whose guards (and threshold, for the replay) apply.
    pub route: String,
    /// Labelled pairs to score.
    pub pairs: Option<PathBuf>,
    /// Prompt log to replay.
    pub replay: Option<PathBuf>,
    /// Highest acceptable share of traps served (default: the route's, and 0.02 for the sweep).
    pub max_wrong: Option<f32>,
    /// Print JSON instead of tables.
    pub json: bool,
    /// Draw served and wrong against the threshold into this PNG.
    pub plot: Option<PathBuf>,
    /// Write the chosen threshold into this route of the config file.
    pub write_route: Option<String>,
}

/// Runs the command; the text to print on success.
pub fn run(args: &EvalArgs) -> anyhow::Result<String> {
    let config = Config::load(args.config.as_deref())?;
    let route = config
        .route(&args.route)
        .ok_or_else(|| anyhow::anyhow!("no route named `{}` in the config", args.route))?;
    let guards = route.cache.guards.clone();
    let embedder = OnnxEmbedder::load(&config.embedding)?;
    let max_unknown = config.embedding.max_unknown_token_ratio;
    let header = format!(
        "model {}, guards [{}], route {}",
        config.embedding.model.slug(),
        replay::label(&guards),
        route.name
    );
    if let Some(path) = &args.replay {
        let prompts = replay::parse(&display(path), &read(path)?)?;
        let bar = progress(prompts.len(), "embedding prompts");
        let embedded = replay::embed_prompts(&embedder, &prompts, |n| bar.set_position(n as u64))?;
        bar.finish_and_clear();
        let sets = replay::guard_sets(&guards);
        let log = (prompts.as_slice(), embedded.as_slice());
        let rates = replay::replay(max_unknown, log, &sets, &thresholds());
        let verified = match Verifier::load(
            &config.embedding.verifier_path(),
            config.embedding.model.slug(),
        ) {
            Ok(verifier) => {
                let floor = verifier.floor_for(route.cache.similarity_threshold);
                let mut points = vec![0.002f32, 0.005, 0.01, 0.02, 0.05, 0.1];
                points.push(args.max_wrong.unwrap_or(route.cache.max_wrong));
                points.sort_by(f32::total_cmp);
                points.dedup();
                Some(replay::replay_verified(
                    max_unknown,
                    log,
                    &verifier,
                    floor,
                    &points,
                ))
            }
            Err(_) => None,
        };
        if args.json {
            return Ok(json!({"model": config.embedding.model.slug(), "prompts": prompts.len(), "rates": rates, "verifier": verified}).to_string());
        }
        let mut out = format!(
            "{header}, {} prompts\n{}",
            prompts.len(),
            report::replay_table(&rates)
        );
        if let Some(verified) = verified {
            out.push_str("\nwith the verifier (the route's decision):\nmax_wrong  cut    hit rate  semantic\n");
            for r in verified {
                out.push_str(&format!(
                    "{:9}  {:.3}  {:8.3}  {:8.3}\n",
                    r.max_wrong, r.cut, r.hit_rate, r.semantic_rate
                ));
            }
        }
        return Ok(out);
    }
    let Some(path) = &args.pairs else {
        anyhow::bail!("give --pairs FILE or --replay FILE");
    };
    let labelled = pairs::parse(&display(path), &read(path)?)?;
    let bar = progress(labelled.len() * 2, "embedding pairs");
    let embedded = pairs::embed_pairs(&embedder, &labelled, |n| bar.set_position(n as u64))?;
    bar.finish_and_clear();
    let verified = verifier_report(&config, route, &labelled, &embedded, args.max_wrong);
    let judged = pairs::judge_embedded(&guards, max_unknown, &labelled, &embedded);
    let max_wrong = args.max_wrong.unwrap_or(0.02);
    let (groups, chosen) = sweep_groups(&judged, max_wrong);
    let mut out = String::new();
    if let Some(plot) = &args.plot {
        report::plot(plot, &groups, chosen, max_wrong)?;
    }
    if let (Some(name), Some(threshold)) = (&args.write_route, chosen) {
        let file = args
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        write_threshold(&file, name, threshold)?;
        out.push_str(&format!(
            "wrote routes[{name}].cache.similarity_threshold = {threshold:.2} to {}\n",
            file.display()
        ));
    }
    if args.json {
        let by_category = category_lines(&judged, chosen);
        return Ok(json!({
            "model": config.embedding.model.slug(),
            "guards": replay::label(&guards),
            "max_wrong": max_wrong,
            "chosen_threshold": chosen,
            "groups": groups,
            "at_chosen_by_category": by_category.iter().map(|(g, r)| json!({"group": g, "rates": r})).collect::<Vec<_>>(),
        })
        .to_string());
    }
    out.insert_str(
        0,
        &format!("{header}, {} pairs\n\n{verified}\n", judged.len()),
    );
    for group in &groups {
        out.push_str(&report::sweep_table(group, max_wrong));
        out.push('\n');
    }
    match chosen {
        Some(t) => {
            out.push_str(&format!(
                "chosen threshold (every language within max wrong {}): {t:.2}\n",
                max_wrong
            ));
            for (group, rates) in category_lines(&judged, Some(t)) {
                out.push_str(&report::summary_line(&group, &rates));
                out.push('\n');
            }
        }
        None => out.push_str(&format!(
            "no threshold keeps every language within max wrong {}\n",
            max_wrong
        )),
    }
    Ok(out)
}

/// The verifier's figures on `labelled` at the route's operating point, beside the old rule's;
/// a note instead when no verifier is loaded.
fn verifier_report(
    config: &Config,
    route: &crate::config::RouteConfig,
    labelled: &[(super::Prompt, super::Prompt, pairs::Labels)],
    embedded: &[crate::embedding::Embedded],
    max_wrong: Option<f32>,
) -> String {
    let path = config.embedding.verifier_path();
    let verifier = match Verifier::load(&path, config.embedding.model.slug()) {
        Ok(v) => v,
        Err(e) => return format!("no verifier: {e}\n"),
    };
    let featured =
        verified::featurize(config.embedding.max_unknown_token_ratio, labelled, embedded);
    let floor = verifier.floor_for(route.cache.similarity_threshold);
    let old = verified::Rule::Guards {
        threshold: config.embedding.model.default_threshold(),
        guards: &route.cache.guards,
    };
    verified::report(
        &featured,
        &verifier,
        floor,
        max_wrong.unwrap_or(route.cache.max_wrong),
        old,
    )
}

/// `deja verifier train`.
pub fn train(
    config: Option<&Path>,
    files: &[PathBuf],
    floor: f32,
    out: Option<&Path>,
) -> anyhow::Result<String> {
    let config = Config::load(config)?;
    let embedder = OnnxEmbedder::load(&config.embedding)?;
    let out = out.map_or_else(|| config.embedding.verifier_path(), Path::to_path_buf);
    Ok(verified::train_files(
        &embedder,
        config.embedding.max_unknown_token_ratio,
        files,
        floor,
        &out,
    )?)
}

/// Sweeps all pairs and each language; the chosen threshold is the lowest one at which every
/// language (or all pairs, when unlabelled) stays within `max_wrong`.
pub fn sweep_groups(judged: &[Judged], max_wrong: f32) -> (Vec<GroupSweep>, Option<f32>) {
    let mut groups = vec![group_sweep("all", judged.iter().collect(), max_wrong)];
    let by_lang = pairs::groups(judged, |p| p.lang.as_deref());
    if by_lang.len() > 1 || !by_lang.contains_key("unlabelled") {
        groups.extend(
            by_lang
                .into_iter()
                .map(|(lang, members)| group_sweep(&lang, members, max_wrong)),
        );
    }
    let deciding = if groups.len() > 1 {
        &groups[1..]
    } else {
        &groups[..]
    };
    let chosen = deciding
        .iter()
        .map(|g| g.lowest_meeting.map(|r| r.threshold))
        .try_fold(0.0f32, |acc, t| t.map(|t| acc.max(t)));
    (groups, chosen)
}

fn group_sweep(name: &str, members: Vec<&Judged>, max_wrong: f32) -> GroupSweep {
    let sweep: Vec<Rates> = thresholds()
        .into_iter()
        .map(|t| pairs::rates(members.iter().copied(), t))
        .collect();
    GroupSweep {
        group: name.to_owned(),
        same_answer: members.iter().filter(|p| p.same_answer).count(),
        traps: members.iter().filter(|p| !p.same_answer).count(),
        lowest_meeting: pairs::lowest_meeting(&sweep, max_wrong),
        sweep,
    }
}

/// Rates per `lang/category` at `threshold`.
fn category_lines(judged: &[Judged], threshold: Option<f32>) -> Vec<(String, Rates)> {
    let Some(threshold) = threshold else {
        return Vec::new();
    };
    let key = |p: &Judged| {
        format!(
            "{}/{}",
            p.lang.as_deref().unwrap_or("-"),
            p.category.as_deref().unwrap_or("-")
        )
    };
    let mut keys: Vec<String> = judged.iter().map(key).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|k| {
            let members = judged.iter().filter(|p| key(p) == k);
            let rates = pairs::rates(members, threshold);
            (k, rates)
        })
        .collect()
}

/// Sets `cache.similarity_threshold` of route `name` in the TOML file at `path` (adding the
/// route when absent), keeping its comments and layout; refuses to write a file that would no
/// longer load.
pub fn write_threshold(path: &Path, name: &str, threshold: f32) -> Result<(), EvalError> {
    let text = if path.exists() {
        read(path)?
    } else {
        String::new()
    };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e| EvalError::Output(format!("{}: {e}", path.display())))?;
    let routes = doc
        .entry("routes")
        .or_insert_with(|| toml_edit::Item::ArrayOfTables(toml_edit::ArrayOfTables::new()));
    let Some(routes) = routes.as_array_of_tables_mut() else {
        return Err(EvalError::Output(format!(
            "{}: `routes` is not an array of tables",
            path.display()
        )));
    };
    let position = routes
        .iter()
        .position(|t| t.get("name").and_then(|n| n.as_str()) == Some(name));
    let route = match position {
        Some(i) => routes.get_mut(i),
        None => {
            let mut table = toml_edit::Table::new();
            table.insert("name", toml_edit::value(name));
            routes.push(table);
            routes.get_mut(routes.len() - 1)
        }
    }
    .ok_or_else(|| EvalError::Output("route table vanished".to_owned()))?;
    let rounded = (f64::from(threshold) * 100.0).round() / 100.0;
    route["cache"]["similarity_threshold"] = toml_edit::value(rounded);
    let updated = doc.to_string();
    Config::from_toml_with_env(&updated, &path.display().to_string(), &[])
        .map_err(|e| EvalError::Output(format!("not written, the result would not load: {e}")))?;
    std::fs::write(path, updated).map_err(|e| EvalError::Output(format!("{}: {e}", path.display())))
}

fn read(path: &Path) -> Result<String, EvalError> {
    std::fs::read_to_string(path).map_err(|source| EvalError::Read {
        path: display(path),
        source,
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}
