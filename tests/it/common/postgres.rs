//! A fresh Postgres database per test on the local server (127.0.0.1:5432, trust auth; `.ci/run`
//! starts one where none answers), dropped when the test ends.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct PgDatabase {
    pub url: String,
    name: String,
}

impl PgDatabase {
    pub async fn create() -> Self {
        let name = format!("deja_test_{}", deja::store::random_hex(6));
        let mut admin = PgConnection::connect(ADMIN_URL)
            .await
            .expect("Postgres must answer on 127.0.0.1:5432 (scripts/test.sh starts one)");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        Self {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop may run inside a runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(ADMIN_URL).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .ok()
            })
        })
        .join();
    }
}
