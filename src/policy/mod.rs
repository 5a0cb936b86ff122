//! One place decides what a caller may do. Before the cache or any upstream is touched, a
//! request is resolved into a [`CallContext`]: who is calling, which route, the Portkey headers
//! read once, and the effective policy (retry, timeout, cache settings, and the target plan with
//! each target's URL and credential). Everything after reads the context, never raw headers.

mod hosts;
mod plan;
pub mod saved;

pub use hosts::{GuardedResolver, HostPolicy, HostRefusal, Origin, is_internal};
pub use plan::{Child, Group, Node, Plan, Target};
pub use saved::SavedConfigs;

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use secrecy::ExposeSecret;

use crate::auth::Principal;
use crate::config::{CacheMode, Config, DEFAULT_ROUTE, RouteCacheConfig, RouteConfig};
use crate::error::AppError;
use crate::portkey::{
    HEADER_CACHE_NAMESPACE, HEADER_CONFIG, HEADER_FORCE_REFRESH, HEADER_ROUTE, HEADER_VIRTUAL_KEY,
    PortkeyConfigError,
};
use crate::state::AppState;
use crate::store::keys::Scope;

/// A caller asked for something the policy does not allow; always a 400 naming the field.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// A `custom_host` the operator did not allow.
    #[error("x-portkey-config: {0}: {1}")]
    Host(String, HostRefusal),
    /// A credential named for a host it is not bound to.
    #[error(
        "{0} may not be sent to {1}: a credential goes only to its provider's host, the hosts listed on it, or [upstream]"
    )]
    Credential(String, String),
    /// More targets than a caller's config may name.
    #[error("x-portkey-config: targets: a config may name at most {0} targets in all")]
    TooManyTargets(usize),
    /// A `cb_config.cooldown` above `[security] max_breaker_cooldown`.
    #[error("x-portkey-config: {0} must be at most {1} ms ([security] max_breaker_cooldown)")]
    Cooldown(String, u128),
}

impl Denied {
    /// Short label for metrics and the error body's `code`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Host(..) => "host_not_allowed",
            Self::Credential(..) => "credential_not_allowed",
            Self::Cooldown(..) => "cooldown_too_long",
            Self::TooManyTargets(_) => "too_many_targets",
        }
    }
}

/// What the policy holds from the config: built once.
pub struct Policy {
    /// Where callers may send deja.
    pub hosts: HostPolicy,
    /// `Authorization` with the operator's `[upstream] api_key`.
    pub operator_auth: Option<HeaderValue>,
}

impl Policy {
    /// From the validated config.
    pub fn new(config: &Config) -> Result<Self, AppError> {
        let operator_auth = match &config.upstream.api_key {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .map_err(|_| {
                    AppError::Internal(
                        "upstream.api_key holds characters not allowed in a header".to_owned(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            hosts: HostPolicy::new(config),
            operator_auth,
        })
    }
}

/// Portkey's request headers, read once.
#[derive(Debug, Default, Clone)]
pub struct PortkeyHeaders {
    /// `x-portkey-config`: inline JSON or a saved config's slug.
    pub config: Option<String>,
    /// `x-portkey-virtual-key`.
    pub virtual_key: Option<String>,
    /// `x-portkey-cache-namespace`.
    pub namespace: String,
    /// `x-portkey-cache-force-refresh: true`.
    pub force_refresh: bool,
}

impl PortkeyHeaders {
    /// Reads the headers deja acts on.
    pub fn parse(headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            config: text(HEADER_CONFIG),
            virtual_key: text(HEADER_VIRTUAL_KEY),
            namespace: text(HEADER_CACHE_NAMESPACE).unwrap_or_default(),
            force_refresh: text(HEADER_FORCE_REFRESH)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

/// Everything decided about one request before it runs.
pub struct CallContext<'a> {
    /// The caller (`None`: anonymous, where auth is optional).
    pub principal: Option<Principal>,
    /// The caller's tenant ("" for anonymous callers, who own nothing).
    pub tenant: String,
    /// The route.
    pub route: &'a RouteConfig,
    /// Portkey's headers.
    pub headers: PortkeyHeaders,
    /// The saved config named: slug and version.
    pub saved: Option<(String, String)>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Cache settings in force (caller's TTL capped).
    pub cache: RouteCacheConfig,
    /// Force-refresh was asked and is allowed.
    pub force_refresh: bool,
    /// Force-refresh was asked and refused (counted, then ignored).
    pub refresh_refused: bool,
    /// The partition's scope: tenant (unless the route is shared), namespace, and what produces
    /// the answer.
    pub partition_scope: String,
    /// The target plan.
    pub plan: Plan,
}

impl CallContext<'_> {
    /// The virtual key the request log names: the header's, else the first a target used.
    pub fn virtual_key(&self) -> Option<&str> {
        self.headers
            .virtual_key
            .as_deref()
            .or(self.plan.virtual_keys.first().map(String::as_str))
    }
}

/// Where the caller asked to go: `/r/{route}/...` and the request headers.
pub struct Call<'a> {
    /// Route named in the path, if any.
    pub path_route: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// Resolves a call to `route` (chosen by [`choose_route`]) into its context.
pub async fn resolve<'a>(
    state: &'a AppState,
    call: &Call<'_>,
    route: &'a RouteConfig,
    principal: Option<Principal>,
) -> Result<CallContext<'a>, AppError> {
    let headers = PortkeyHeaders::parse(call.headers);
    let config = &state.config;
    let tenant = principal
        .as_ref()
        .map_or_else(String::new, |p| p.tenant.clone());
    let (request, saved) = saved::resolve(state, &tenant, headers.config.as_deref()).await?;
    let retry = request.retry_over(&route.retry)?;
    // A caller may shorten the route's timeout, not stretch it.
    let most = route.timeout.unwrap_or(config.upstream.timeout);
    let timeout = request.timeout().map_or(most, |t| t.min(most));
    let mut cache = request.cache_over(&route.cache)?;
    if cache.mode() == CacheMode::Semantic && state.cache.semantic().is_none() {
        return Err(PortkeyConfigError::Invalid(vec![
            "cache.mode `semantic` is not available: this gateway runs with [embedding] \
             enabled = false; use `simple`"
                .to_owned(),
        ])
        .into());
    }
    if route.cache.shared {
        // A shared route serves other tenants' answers: a caller may raise the bar, not lower it.
        let floor = route
            .cache
            .similarity_threshold
            .unwrap_or_else(|| config.embedding.model.default_threshold());
        cache.similarity_threshold = cache.similarity_threshold.map(|t| t.max(floor));
    }
    let named_key = headers
        .virtual_key
        .as_deref()
        .or(request.virtual_key.as_deref());
    let opened = match named_key {
        Some(slug) => Some(saved::virtual_key(state, &tenant, slug).await?),
        None => None,
    };
    let plan = plan::Resolver::new(state, route, &tenant)
        .resolve(&request, opened.as_deref(), (retry, timeout))
        .await?;
    let may_refresh = route.cache.allow_force_refresh
        || principal
            .as_ref()
            .is_some_and(|p| matches!(p.scope, Scope::Admin | Scope::Operator));
    let owner = if route.cache.shared { "" } else { &tenant };
    let partition_scope = format!("{owner}\u{1f}{}\u{1f}{}", headers.namespace, plan.producer);
    Ok(CallContext {
        force_refresh: headers.force_refresh && may_refresh,
        refresh_refused: headers.force_refresh && !may_refresh,
        principal,
        tenant,
        route,
        saved,
        timeout,
        cache,
        partition_scope,
        plan,
        headers,
    })
}

/// The route a call goes to: named by path or `x-deja-route`, else the first whose `models`
/// match `model`, else `default`.
pub fn choose_route<'c>(
    config: &'c Config,
    call: &Call<'_>,
    model: Option<&str>,
) -> Result<&'c RouteConfig, AppError> {
    let named = call
        .path_route
        .or_else(|| call.headers.get(HEADER_ROUTE)?.to_str().ok());
    match named.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => config
            .route(name)
            .ok_or_else(|| AppError::UnknownRoute(name.to_owned())),
        None => Ok(model.map_or_else(|| default_route(config), |m| route_for_model(config, m))),
    }
}

/// First route, in file order, with a `models` glob matching `model`; else `default`.
pub fn route_for_model<'c>(config: &'c Config, model: &str) -> &'c RouteConfig {
    config
        .routes
        .iter()
        .find(|r| r.name != DEFAULT_ROUTE && r.matches_model(model))
        .unwrap_or_else(|| default_route(config))
}

fn default_route(config: &Config) -> &RouteConfig {
    // Config::load always appends a `default` route, so the fallback is the last route.
    config
        .route(DEFAULT_ROUTE)
        .or(config.routes.last())
        .unwrap_or(&FALLBACK_ROUTE)
}

static FALLBACK_ROUTE: std::sync::LazyLock<RouteConfig> =
    std::sync::LazyLock::new(|| RouteConfig::named(DEFAULT_ROUTE));
