//! The run layer between the command line and the stages: the run config and its model roles
//! ([`config`]), building a role's model from its spec ([`models`]), the environment choice
//! ([`environment`]), a session over one run directory ([`session`]: models, cache, manifest,
//! stats, pending items), the pipeline commands ([`pipeline`]), `autosafe train` ([`train`]),
//! the evaluation runners ([`eval`]), terminal scenarios proved in the sandbox
//! ([`scenario`]) and input checking ([`validate`], over the one format
//! dispatch of [`inputs`]). It prints nothing: what a command has to say goes to an
//! [`observe::Observer`], which the binary implements.

pub mod bench;
pub mod config;
pub(crate) mod config_file;
pub mod environment;
pub mod eval;
pub mod inputs;
pub mod models;
pub mod observe;
pub mod pending;
pub mod pipeline;
pub mod scenario;
pub mod session;
pub mod train;
pub mod validate;

pub use config::{DEFAULT_LOCAL_MODEL, ModelEntry, ModelsConfig, Role, RunConfig};
pub use config_file::temperature_arg;
pub use observe::{Observer, StagePlan, StageWatch};
pub use pending::{EXIT_PENDING, PendingStatus};
