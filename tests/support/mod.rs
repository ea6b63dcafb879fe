pub mod mariadb;
pub mod rlb;
