//! Shared test support, one module a concern: `rlb` (rlb in-process, test servers,
//! clients, `eventually`, `TempDir`), `admin` (the admin API client), `process` (the
//! `rlb` binary and HTTP servers in processes of their own), `mariadb` (a MariaDB
//! primary + 2 replicas), `tls` (a test CA, its certificates, rustls clients).
pub mod admin;
pub mod mariadb;
pub mod process;
pub mod rlb;
pub mod tls;
