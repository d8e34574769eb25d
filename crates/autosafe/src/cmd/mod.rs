//! One module per subcommand.
pub mod bench;
pub mod compare;
pub(crate) mod config_file;
pub mod environment;
pub mod eval;
pub mod model;
pub mod models;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod sandbox;
pub mod serve;
pub mod taxonomy;
pub mod train;
pub mod validate;
