//! appmgr-board (being written)
