//! Shared test support: rlb in-process, test servers, MariaDB cluster, processes.
pub mod control;
pub mod health;
pub mod mariadb;
pub mod process;
pub mod rlb;
