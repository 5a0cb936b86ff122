//! The target plan: a config's `strategy`/`targets` tree resolved, before anything is sent, into
//! targets that each carry the URL deja will call and the credential it will send there. Every
//! rule on hosts and credentials is applied here, once: a caller's host must be allowed, a
//! credential only goes where it is bound, and a target whose host was changed never inherits a
//! credential that is not bound to that host.

use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderValue;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Denied;
use super::hosts::{HostPolicy, Origin};
use super::saved::OpenedKey;
use crate::cache::key::{feed, hex};
use crate::config::{RetryConfig, RouteConfig};
use crate::error::AppError;
use crate::portkey::{CircuitBreaker, RequestConfig, StrategyMode};
use crate::state::AppState;
use crate::upstream::adapter::Wire;
use crate::upstream::providers;

/// Where a credential may be sent.
#[derive(Debug, Clone)]
enum Binding {
    /// The caller's own inline key, or a key the operator wrote into a route: wherever its
    /// target goes.
    Anywhere,
    /// The operator's `[upstream] api_key`: only to `[upstream] base_url`.
    Operator,
    /// A virtual key: its provider's base URL, the hosts listed on it, and `[upstream]`.
    Hosts(Vec<Origin>),
}

/// A credential and where it may go.
#[derive(Debug, Clone)]
struct Credential {
    auth: HeaderValue,
    /// What the cache partition and breakers know it by: never the secret.
    id: String,
    binding: Binding,
    /// Virtual key slug, for the request log.
    slug: Option<String>,
}

/// One upstream call's settings, fully resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// Base URL; the endpoint path is appended.
    pub base_url: String,
    /// The provider's wire format.
    pub wire: Wire,
    /// `Authorization` to send, if any.
    pub auth: Option<HeaderValue>,
    /// The credential's identity (`operator`, `vk:ID`, `key:HASH`, `none`).
    pub credential: String,
    /// Body fields laid over the request's.
    pub params: Map<String, Value>,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// A node of the plan.
#[derive(Debug, Clone)]
pub enum Node {
    /// One call.
    Leaf(Target),
    /// A choice among children.
    Group(Group),
}

/// `strategy` over `targets`.
#[derive(Debug, Clone)]
pub struct Group {
    /// Fallback or loadbalance.
    pub mode: StrategyMode,
    /// Statuses that move a fallback on (default any non-2xx).
    pub on_status_codes: Option<Vec<u16>>,
    /// The targets.
    pub children: Vec<Child>,
}

/// A target of a group.
#[derive(Debug, Clone)]
pub struct Child {
    /// The target itself.
    pub node: Node,
    /// Its path, such as `targets[1].targets[0]` (a metric label and a response header).
    pub path: String,
    /// Its index among its siblings.
    pub index: usize,
    /// Loadbalance weight.
    pub weight: f64,
    /// Its circuit breaker: key (who brought it and where it goes) and settings.
    pub breaker: Option<(String, CircuitBreaker)>,
}

/// A resolved plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The tree.
    pub root: Node,
    /// Whether the plan came from `strategy`/`targets` (its answers name their target).
    pub strategic: bool,
    /// Whether the caller wrote it (not the operator's route).
    pub caller: bool,
    /// Hash of what may produce the answer (hosts, credentials' ids, parameters, modes): part
    /// of the cache partition.
    pub producer: String,
    /// Virtual key slugs the plan uses.
    pub virtual_keys: Vec<String>,
}

impl Plan {
    /// The first leaf: the target a verification call goes to.
    pub fn first_target(&self) -> Option<&Target> {
        first(&self.root)
    }
}

fn first(node: &Node) -> Option<&Target> {
    match node {
        Node::Leaf(t) => Some(t),
        Node::Group(g) => first(&g.children.first()?.node),
    }
}

/// Settings a node passes down.
#[derive(Clone)]
struct Inherited {
    retry: RetryConfig,
    timeout: Duration,
    credential: Option<Credential>,
    base_url: String,
    wire: Wire,
    params: Map<String, Value>,
    breaker: Option<CircuitBreaker>,
}

/// Who wrote the plan: the operator (a route) or the caller (inline or saved config).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Author {
    Operator,
    Caller,
}

/// What resolving needs.
pub(super) struct Resolver<'a> {
    pub state: &'a AppState,
    pub route: &'a RouteConfig,
    pub tenant: &'a str,
    hosts: &'a HostPolicy,
    author: Author,
    virtual_keys: Vec<String>,
    producer: Sha256,
    /// Targets resolved so far.
    leaves: usize,
}

/// Most targets a caller's config may name: each may cost `retry.attempts + 1` upstream calls on
/// a key others share.
pub const MAX_CALLER_TARGETS: usize = 16;

impl<'a> Resolver<'a> {
    pub fn new(state: &'a AppState, route: &'a RouteConfig, tenant: &'a str) -> Self {
        Self {
            state,
            route,
            tenant,
            hosts: &state.policy.hosts,
            author: Author::Operator,
            virtual_keys: Vec::new(),
            producer: Sha256::new(),
            leaves: 0,
        }
    }

    /// Where `base_url` is, parsed once for `[upstream]` (the common case).
    fn origin_of(&self, base_url: &str) -> Option<Origin> {
        if base_url == self.state.config.upstream.base_url {
            return self.hosts.upstream().cloned();
        }
        Origin::of(base_url).ok()
    }

    /// Resolves the plan for a request whose own config is `request`; `header_key` is the
    /// virtual key of `x-portkey-virtual-key` (or the config's top-level `virtual_key`).
    pub async fn resolve(
        mut self,
        request: &RequestConfig,
        header_key: Option<&OpenedKey>,
        (retry, timeout): (RetryConfig, Duration),
    ) -> Result<Plan, AppError> {
        let config = &self.state.config;
        let operator = self
            .state
            .policy
            .operator_auth
            .as_ref()
            .map(|auth| Credential {
                auth: auth.clone(),
                id: "operator".to_owned(),
                binding: Binding::Operator,
                slug: None,
            });
        let merged;
        let (top, strategic) = if request.brings_targets() {
            self.author = Author::Caller;
            (request, request.has_targets())
        } else if let Some(plan) = &self.route.plan {
            merged = plan.with_request(request);
            (&merged, true)
        } else {
            (request, false)
        };
        let base = Inherited {
            // The top's retry is the request's over the route's (a route plan's top has none).
            retry,
            timeout,
            credential: operator,
            base_url: config.upstream.base_url.clone(),
            wire: Wire::OpenAi,
            params: Map::new(),
            breaker: None,
        };
        let given = header_key.map(|k| self.opened(k));
        let root = self.node(top, base, given, String::new(), false).await?;
        Ok(Plan {
            root,
            strategic,
            caller: self.author == Author::Caller,
            producer: hex(&self.producer.finalize()),
            virtual_keys: self.virtual_keys,
        })
    }

    fn opened(&mut self, key: &OpenedKey) -> Credential {
        let mut bound: Vec<Origin> = key
            .hosts
            .iter()
            .filter_map(|h| Origin::of(h).ok())
            .collect();
        if let Some(url) = providers::base_url(&key.provider).and_then(|u| Origin::of(u).ok()) {
            bound.push(url);
        }
        bound.extend(self.hosts.upstream().cloned());
        if !self.virtual_keys.contains(&key.slug) {
            self.virtual_keys.push(key.slug.clone());
        }
        Credential {
            auth: key.auth.clone(),
            id: format!("vk:{}", key.id),
            binding: Binding::Hosts(bound),
            slug: Some(key.slug.clone()),
        }
    }

    fn node<'n>(
        &'n mut self,
        config: &'n RequestConfig,
        parent: Inherited,
        given: Option<Credential>,
        path: String,
        child: bool,
    ) -> BoxFuture<'n, Result<Node, AppError>> {
        Box::pin(async move {
            let fields = &config.targets_fields;
            let at = |field: &str| {
                if path.is_empty() {
                    field.to_owned()
                } else {
                    format!("{path}.{field}")
                }
            };
            let mut out = parent;
            if child && config.retry.is_some() {
                out.retry = config.retry_over(&self.route.retry)?;
            }
            if let Some(ms) = config.request_timeout.filter(|ms| *ms > 0) {
                // A caller may shorten a wait, not hold the route's slots longer.
                out.timeout = Duration::from_millis(ms).min(self.timeout_cap());
            }
            let mut given = given;
            if let Some(key) = &fields.api_key {
                given = Some(self.inline_key(&key.0)?);
            } else if let Some(slug) = config.virtual_key.as_deref().filter(|_| child) {
                let opened = super::saved::virtual_key(self.state, self.tenant, slug).await?;
                given = Some(self.opened(&opened));
            }
            if let Some(host) = &fields.custom_host {
                if self.author == Author::Caller {
                    self.hosts
                        .check_caller(host, self.hosts.route_hosts(&self.route.name))
                        .map_err(|why| Denied::Host(at("custom_host"), why))?;
                }
                out.base_url = host.clone();
            } else if let Some(url) = fields
                .provider
                .as_deref()
                .and_then(providers::base_url)
                .filter(|u| !u.is_empty())
            {
                out.base_url = url.to_owned();
            }
            if let Some(provider) = &fields.provider {
                out.wire = providers::wire(provider, fields.api_version.as_deref());
            }
            if let Some(base) = config.azure_base() {
                // A resource name chooses a host as surely as a custom_host does (anyone can own
                // `{name}.openai.azure.com`), so it passes the same check.
                if self.author == Author::Caller && fields.custom_host.is_none() {
                    self.hosts
                        .check_caller(&base, self.hosts.route_hosts(&self.route.name))
                        .map_err(|why| Denied::Host(at("resource_name"), why))?;
                }
                out.base_url = base;
            }
            let destination = self.origin_of(&out.base_url);
            match given {
                Some(credential) => {
                    if !self.may_send(&credential, destination.as_ref()) {
                        let what = credential.slug.as_deref().map_or_else(
                            || "this credential".to_owned(),
                            |s| format!("virtual key `{s}`"),
                        );
                        return Err(Denied::Credential(what, out.base_url.clone()).into());
                    }
                    out.credential = Some(credential);
                }
                None => {
                    // An inherited credential goes on only where it is bound; elsewhere the
                    // target gets none rather than one it was never given.
                    if out
                        .credential
                        .as_ref()
                        .is_some_and(|c| !self.may_send(c, destination.as_ref()))
                    {
                        out.credential = None;
                    }
                }
            }
            if let Some(params) = &fields.override_params {
                for (k, v) in params {
                    out.params.insert(k.clone(), v.clone());
                }
            }
            if let Some(cb) = fields.cb_config {
                let most = self.state.config.security.max_breaker_cooldown;
                if self.author == Author::Caller && Duration::from_millis(cb.cooldown) > most {
                    return Err(Denied::Cooldown(at("cb_config.cooldown"), most.as_millis()).into());
                }
                out.breaker = Some(cb);
            }
            let Some(children) = fields.targets.as_ref().filter(|t| !t.is_empty()) else {
                self.leaves += 1;
                if self.author == Author::Caller && self.leaves > MAX_CALLER_TARGETS {
                    return Err(Denied::TooManyTargets(MAX_CALLER_TARGETS).into());
                }
                return Ok(Node::Leaf(self.leaf(&out)));
            };
            let mode = fields
                .strategy
                .as_ref()
                .map_or(StrategyMode::Fallback, |s| s.mode);
            feed(&mut self.producer, format!("group:{mode:?}").as_bytes());
            let mut resolved = Vec::with_capacity(children.len());
            for (i, c) in children.iter().enumerate() {
                let child_path = if path.is_empty() {
                    format!("targets[{i}]")
                } else {
                    format!("{path}.targets[{i}]")
                };
                let node = self
                    .node(c, out.clone(), None, child_path.clone(), true)
                    .await?;
                let breaker = c
                    .targets_fields
                    .cb_config
                    .or(out.breaker)
                    .map(|cb| (self.breaker_key(&node), cb));
                resolved.push(Child {
                    node,
                    path: child_path,
                    index: i,
                    weight: c.targets_fields.weight.unwrap_or(1.0),
                    breaker,
                });
            }
            feed(&mut self.producer, b"end");
            Ok(Node::Group(Group {
                mode,
                on_status_codes: fields
                    .strategy
                    .as_ref()
                    .and_then(|s| s.on_status_codes.clone()),
                children: resolved,
            }))
        })
    }

    fn timeout_cap(&self) -> Duration {
        self.route
            .timeout
            .unwrap_or(self.state.config.upstream.timeout)
    }

    fn inline_key(&self, key: &str) -> Result<Credential, AppError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            AppError::InvalidField {
                param: crate::portkey::HEADER_CONFIG,
                message: "an api_key holds characters not allowed in a header".to_owned(),
            }
        })?;
        auth.set_sensitive(true);
        let digest = Sha256::digest(key.as_bytes());
        Ok(Credential {
            auth,
            id: format!("key:{}", &hex(&digest)[..16]),
            binding: Binding::Anywhere,
            slug: None,
        })
    }

    fn may_send(&self, credential: &Credential, to: Option<&Origin>) -> bool {
        let Some(to) = to else { return false };
        match &credential.binding {
            Binding::Anywhere => true,
            Binding::Operator => self.hosts.upstream().is_some_and(|u| u.covers(to)),
            Binding::Hosts(bound) => bound.iter().any(|b| b.covers(to)),
        }
    }

    fn leaf(&mut self, settings: &Inherited) -> Target {
        let credential = settings
            .credential
            .as_ref()
            .map_or("none".to_owned(), |c| c.id.clone());
        feed(
            &mut self.producer,
            settings.base_url.trim_end_matches('/').as_bytes(),
        );
        feed(&mut self.producer, credential.as_bytes());
        feed(
            &mut self.producer,
            crate::cache::key::canonical(&Value::Object(settings.params.clone())).as_bytes(),
        );
        feed(&mut self.producer, settings.wire.name().as_bytes());
        Target {
            base_url: settings.base_url.clone(),
            wire: settings.wire.clone(),
            auth: settings.credential.as_ref().map(|c| c.auth.clone()),
            credential,
            params: settings.params.clone(),
            retry: settings.retry.clone(),
            timeout: settings.timeout,
        }
    }

    /// Who brought the target, and where it goes with which credential: a caller's breaker
    /// never shares state with the route's, nor with another tenant's.
    fn breaker_key(&self, node: &Node) -> String {
        let mut hasher = Sha256::new();
        match self.author {
            Author::Operator => feed(&mut hasher, format!("route:{}", self.route.name).as_bytes()),
            Author::Caller => feed(&mut hasher, format!("tenant:{}", self.tenant).as_bytes()),
        }
        leaves(node, &mut |t| {
            feed(&mut hasher, t.base_url.as_bytes());
            feed(&mut hasher, t.credential.as_bytes());
        });
        hex(&hasher.finalize())[..32].to_owned()
    }
}

fn leaves(node: &Node, visit: &mut impl FnMut(&Target)) {
    match node {
        Node::Leaf(t) => visit(t),
        Node::Group(g) => g.children.iter().for_each(|c| leaves(&c.node, visit)),
    }
}
