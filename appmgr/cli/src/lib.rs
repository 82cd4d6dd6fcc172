//! appmgr-cli (being written)
