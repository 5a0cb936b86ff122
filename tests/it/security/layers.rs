//! What every request passes whatever its handler does: the admin gate on the control plane
//! (a new endpoint cannot be left open by forgetting a check), one request id per request,
//! and a panic guard.

use axum::Router;
use axum::routing::get;
use deja::AppState;
use deja::store::keys::Scope;
use serde_json::Value;

use super::scene::scene;
use crate::common::{self, client, config};

/// `routes` behind deja's layers, with an admin and an inference key of tenant `acme`.
async fn serve_with(
    routes: impl FnOnce(&AppState) -> Router<AppState>,
) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("deja.db").display());
    let cfg = config(
        "http://127.0.0.1:9/v1",
        &format!("[store]\nurl = \"{url}\"\n[server]\nrequire_auth = true\n"),
    );
    let state = AppState::with_embedder(cfg, None).unwrap();
    state.store.migrate().await.unwrap();
    let admin = state
        .store
        .create_key("acme", Scope::Admin)
        .await
        .unwrap()
        .1;
    let inference = state
        .store
        .create_key("acme", Scope::Inference)
        .await
        .unwrap()
        .1;
    state.keys.refresh(&state.store).await.unwrap();
    let router = deja::app::layered(routes(&state), state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _dir = dir;
        axum::serve(listener, router).await.unwrap();
    });
    (base, admin, inference)
}

async fn get_as(url: &str, key: &str) -> (u16, Value) {
    let res = client().get(url).bearer_auth(key).send().await.unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_new_admin_endpoint_without_its_own_check_is_refused_to_inference_keys() {
    let (base, admin, inference) = serve_with(|state| {
        // Written as a careless new endpoint would be: no auth call in the handler.
        let careless = Router::new().route("/v1/new-admin-thing", get(|| async { "secret" }));
        deja::routes::admin_only(careless, state)
    })
    .await;
    let url = format!("{base}/v1/new-admin-thing");
    let (status, body) = get_as(&url, &inference).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("insufficient_scope"))
    );
    let res = client().get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = client().get(&url).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_panicking_handler_answers_an_openai_500() {
    let (base, admin, _) = serve_with(|_| {
        Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("index out of bounds in a handler");
                }
                "unreachable"
            }),
        )
    })
    .await;
    let res = client()
        .get(format!("{base}/boom"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 500);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");
    assert!(!body.to_string().contains("index out of bounds"), "{body}");
}

#[tokio::test]
async fn every_answer_carries_its_own_request_id_which_keys_its_log_row() {
    let s = scene("").await;
    let bearer = format!("Bearer {}", s.acme.inference);
    let headers = [
        ("authorization", bearer.as_str()),
        ("x-request-id", "forged-id-of-another-request"),
    ];
    let res = common::ask(&s, &common::question("id?"), &headers).await;
    let id = res.header("x-request-id").unwrap();
    assert!(id.starts_with("req_") && id.len() == 20, "{id}");
    assert_eq!(res.header("x-portkey-request-id"), Some(id));
    let logs = common::until_logged(&s, &s.acme.admin, 1).await;
    assert_eq!(logs["data"][0]["id"], id, "{logs}");
    // Errors carry one too.
    let res = client()
        .get(format!("{}/nowhere", s.gw.url))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
}
