//! The control plane's store on both dialects: a SQLite file and a fresh Postgres database.
//! Migrations apply (twice is a no-op), saved configs keep every version and roll back, slugs are
//! unique, keys are stored as hashes and revoked.

use crate::common;

use common::postgres;

use deja::store::keys::{Scope, hash_key};
use deja::store::logs::{LogFilter, LogRecord};
use deja::store::{Store, StoreError};
use serde_json::json;

async fn exercise(store: &Store) {
    store.migrate().await.unwrap();
    store.migrate().await.unwrap();

    let retry = json!({"retry": {"attempts": 3}});
    let created = store
        .create_config("acme", "01ai retry", Some("pc-01ai-retry-123"), &retry)
        .await
        .unwrap();
    assert_eq!(created.slug, "pc-01ai-retry-123");
    assert_eq!(created.config, retry);
    let taken = store
        .create_config("acme", "again", Some("pc-01ai-retry-123"), &retry)
        .await;
    assert!(matches!(taken, Err(StoreError::Conflict(_))), "{taken:?}");
    // Slugs are per tenant: another tenant may use the same one, and never sees acme's.
    let other = store
        .create_config("globex", "theirs", Some("pc-01ai-retry-123"), &json!({}))
        .await
        .unwrap();
    assert_eq!(other.tenant, "globex");
    assert_eq!(
        store
            .config("globex", "pc-01ai-retry-123", None)
            .await
            .unwrap()
            .config,
        json!({})
    );
    store
        .delete_config("globex", "pc-01ai-retry-123")
        .await
        .unwrap();
    assert!(matches!(
        store.delete_config("globex", "pc-01ai-retry-123").await,
        Err(StoreError::NotFound(_))
    ));
    let generated = store
        .create_config(
            "acme",
            "Semantic cache!",
            None,
            &json!({"cache": {"mode": "semantic"}}),
        )
        .await
        .unwrap();
    assert!(
        generated.slug.starts_with("pc-semantic-cache-"),
        "{}",
        generated.slug
    );

    let v2 = store
        .update_config(
            "acme",
            "pc-01ai-retry-123",
            None,
            Some(&json!({"retry": {"attempts": 5}})),
        )
        .await
        .unwrap();
    assert_ne!(v2.version_id, created.version_id);
    assert_eq!(
        store
            .config("acme", "pc-01ai-retry-123", None)
            .await
            .unwrap()
            .config["retry"]["attempts"],
        5
    );
    let old = store
        .config("acme", "pc-01ai-retry-123", Some(&created.version_id))
        .await
        .unwrap();
    assert_eq!(old.config, retry);
    let v3 = store
        .rollback_config("acme", "pc-01ai-retry-123", &created.version_id)
        .await
        .unwrap();
    assert_eq!(v3.config, retry);
    let versions = store
        .config_versions("acme", "pc-01ai-retry-123")
        .await
        .unwrap();
    let seqs: Vec<i64> = versions.iter().map(|v| v.seq).collect();
    assert_eq!(seqs, [3, 2, 1]);
    assert_eq!(store.list_configs(None).await.unwrap().len(), 2);

    store
        .delete_config("acme", generated.slug.as_str())
        .await
        .unwrap();
    assert!(matches!(
        store.config("acme", &generated.slug, None).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(store.list_configs(None).await.unwrap().len(), 1);

    let row = |id: &str, at: i64, status: i64, cache: &str| LogRecord {
        id: id.to_owned(),
        at,
        endpoint: "chat.completions".to_owned(),
        route: "default".to_owned(),
        tenant: "acme".to_owned(),
        model: "yi-lightning".to_owned(),
        config_version: String::new(),
        cache_status: cache.to_owned(),
        similarity: (cache == "semantic_hit").then_some(0.97),
        attempts: 1,
        status,
        latency_ms: 1.5,
        tokens: 10,
        prompt: Some(format!("prompt {id}")),
        nearest: (cache == "miss").then_some(0.93),
        guard: if status == 503 {
            "numbers".to_owned()
        } else {
            String::new()
        },
        config: "pc-01ai-retry-123".to_owned(),
        prompt_tokens: 7,
        completion_tokens: 3,
        ..LogRecord::default()
    };
    store
        .insert_logs(&[
            row("a", 1_000, 200, "miss"),
            row("b", 2_000, 200, "semantic_hit"),
            row("c", 3_000, 503, "miss"),
        ])
        .await
        .unwrap();
    let query = |filter: LogFilter| async move {
        let rows = store
            .query_logs(&LogFilter {
                limit: 10,
                ..filter
            })
            .await
            .unwrap();
        rows.into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(query(LogFilter::default()).await, ["c", "b", "a"]);
    assert_eq!(
        query(LogFilter {
            status: Some(503),
            ..LogFilter::default()
        })
        .await,
        ["c"]
    );
    assert_eq!(
        query(LogFilter {
            from: Some(1_500),
            to: Some(2_500),
            ..LogFilter::default()
        })
        .await,
        ["b"]
    );
    let hits = LogFilter {
        cache_status: Some("semantic_hit".to_owned()),
        route: Some("default".to_owned()),
        ..LogFilter::default()
    };
    let hit = store
        .query_logs(&LogFilter { limit: 10, ..hits })
        .await
        .unwrap();
    assert_eq!((hit.len(), hit[0].similarity), (1, Some(0.97)));
    assert_eq!(hit[0].prompt.as_deref(), Some("prompt b"));
    let light = store
        .query_logs(&LogFilter {
            limit: 10,
            without_bodies: true,
            ..LogFilter::default()
        })
        .await
        .unwrap();
    let c = &light[0];
    assert_eq!(
        (
            c.prompt.as_deref(),
            c.nearest,
            c.guard.as_str(),
            c.similarity
        ),
        (None, Some(0.93), "numbers", None)
    );
    assert_eq!(
        (c.config.as_str(), c.prompt_tokens, c.completion_tokens),
        ("pc-01ai-retry-123", 7, 3)
    );
    assert_eq!(light[1].nearest, None);
    assert_eq!(store.prune_logs(2_500).await.unwrap(), 2);
    assert_eq!(query(LogFilter::default()).await, ["c"]);

    let (key, secret) = store.create_key("acme", Scope::Admin).await.unwrap();
    assert!(secret.starts_with("dk-") && secret.len() > 40);
    let active = store.active_keys().await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].hash, hash_key(&secret));
    assert_eq!(
        (active[0].tenant.as_str(), active[0].scope),
        ("acme", Scope::Admin)
    );
    store.revoke_key(&key.id).await.unwrap();
    assert!(store.active_keys().await.unwrap().is_empty());
    assert!(store.list_keys().await.unwrap()[0].revoked_at.is_some());
    assert!(matches!(
        store.revoke_key(&key.id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display());
    exercise(&Store::connect_lazy(&url).unwrap()).await;
    // Reopened: the data and the migration record are still there.
    let again = Store::connect_lazy(&url).unwrap();
    again.migrate().await.unwrap();
    assert_eq!(again.list_configs(None).await.unwrap().len(), 1);
}

#[tokio::test]
async fn postgres_database() {
    let db = postgres::PgDatabase::create().await;
    exercise(&Store::connect_lazy(&db.url).unwrap()).await;
}

/// A SQLite store written by the release before tenant walls (configs with versions, virtual
/// keys) migrates without losing a row.
#[tokio::test]
async fn a_populated_store_from_before_tenant_walls_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    for entry in std::fs::read_dir("migrations/sqlite").unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "20261201150000" {
            std::fs::copy(&path, old.join(&name)).unwrap();
        }
    }
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    for sql in [
        "INSERT INTO configs (id, slug, name, tenant, created_at, updated_at) VALUES ('cfg_1', 'pc-old', 'old', 'acme', 1, 2)",
        "INSERT INTO config_versions (id, config_id, seq, body, created_at) VALUES ('ver_1', 'cfg_1', 1, '{\"retry\":{\"attempts\":1}}', 1)",
        "INSERT INTO config_versions (id, config_id, seq, body, created_at) VALUES ('ver_2', 'cfg_1', 2, '{\"retry\":{\"attempts\":2}}', 2)",
        "INSERT INTO virtual_keys (id, slug, name, provider, sealed, masked, note, tenant, created_at, updated_at) VALUES ('vk_1', 'yi-1a2b3c', 'yi', 'lingyi', 'ab', 'sk-1****2345', '', 'acme', 1, 1)",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = Store::connect_lazy(&url).unwrap();
    store.migrate().await.unwrap();
    let config = store.config("acme", "pc-old", None).await.unwrap();
    assert_eq!(config.config["retry"]["attempts"], 2);
    assert_eq!(
        store.config_versions("acme", "pc-old").await.unwrap().len(),
        2
    );
    let key = store.virtual_key("acme", "yi-1a2b3c").await.unwrap();
    assert!(key.hosts.is_empty());
    // The walls hold on migrated rows too.
    assert!(matches!(
        store.config("globex", "pc-old", None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .create_config("globex", "theirs", Some("pc-old"), &json!({}))
        .await
        .unwrap();
}
