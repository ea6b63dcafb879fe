pub mod control;
pub mod health;
pub mod mariadb;
pub mod process;
pub mod rlb;
