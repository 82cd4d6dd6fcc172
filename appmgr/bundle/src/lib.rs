//! appmgr-bundle (being written)
