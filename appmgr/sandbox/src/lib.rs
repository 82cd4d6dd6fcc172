//! appmgr-sandbox (being written)
