//! appmgr-store (being written)
