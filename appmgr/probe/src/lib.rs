//! appmgr-probe (being written)
