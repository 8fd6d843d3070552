pub mod import_haproxy;
