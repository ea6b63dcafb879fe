pub mod control;
pub mod mariadb;
pub mod rlb;
