//! The traced processes: the target and, with `-f`, the children it forks
//! and theirs. Each has its own tracker (module map, rule cache, where its
//! stacks' frames lie) and its own books in the kernel (keyed by process);
//! each record goes to the tracker of its process.

use std::path::PathBuf;

use crate::books::Books;
use crate::process::ChildExit;
use crate::tracker::Tracker;

/// One traced process.
pub struct Proc {
    pub pid: i32,
    /// Its image (the latest, after an exec).
    pub exe: PathBuf,
    /// The traced process that forked it (none for the target).
    pub parent: Option<i32>,
    pub tracker: Tracker,
    /// How it ended, once it did.
    pub exit: Option<ChildExit>,
    /// Its PID in its own PID namespace (a container), if it has one.
    pub ns_pid: Option<i32>,
    /// How its stacks' bytes changed from report to report.
    pub growth: crate::report::growth::Growth,
}

/// The traced processes, the target first, then in the order they were born.
pub struct Procs {
    list: Vec<Proc>,
}

impl Procs {
    /// The target alone.
    pub fn new(pid: i32, exe: PathBuf, tracker: Tracker) -> Procs {
        Procs {
            list: vec![Proc {
                pid,
                exe,
                parent: None,
                tracker,
                exit: None,
                ns_pid: crate::procfs::ns_pid(pid),
                growth: Default::default(),
            }],
        }
    }

    /// Adds a child.
    pub fn add(&mut self, p: Proc) {
        self.list.push(p);
    }

    pub fn get(&self, pid: i32) -> Option<&Proc> {
        self.list.iter().find(|p| p.pid == pid)
    }

    pub fn get_mut(&mut self, pid: i32) -> Option<&mut Proc> {
        self.list.iter_mut().find(|p| p.pid == pid)
    }

    /// The target.
    pub fn root(&self) -> &Proc {
        &self.list[0]
    }

    pub fn root_mut(&mut self) -> &mut Proc {
        &mut self.list[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Proc> {
        self.list.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.list.iter_mut()
    }

    /// Hands a record to the tracker of its process (the target's when the
    /// process is not traced: it counts and logs it).
    pub fn handle(&mut self, data: &[u8], books: &Books) {
        let tgid = memleak_bpf::record_tgid(data);
        let i = self
            .list
            .iter()
            .position(|p| Some(p.pid as u32) == tgid)
            .unwrap_or(0);
        self.list[i].tracker.handle(data, books);
    }
}
