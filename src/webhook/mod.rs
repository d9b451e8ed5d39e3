//! The reference webhook: the seed functions ([`policy`], reading what they read of a request with
//! [`request`]), fault injection ([`fault`]) and the
//! HTTP server that serves them ([`server`]), both standalone (`loadtest webhook serve`) and
//! in-process when a scenario names no URL; and [`client`], how DPS calls a webhook (over
//! [`pool`]'s [`http1`] connections).

pub(crate) mod client;
pub(crate) mod fault;
pub(crate) mod http1;
pub(crate) mod policy;
pub(crate) mod pool;
pub(crate) mod request;
pub(crate) mod server;
