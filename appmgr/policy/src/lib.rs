//! appmgr-policy (being written)
