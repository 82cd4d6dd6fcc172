//! appmgr-cgroup (being written)
