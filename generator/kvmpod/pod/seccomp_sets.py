"""rkt 1.30's seccomp wildcard sets (stage1/init/common/seccomp_wildcards.go), which it took from
Docker's default profile: `@docker/default-*` and `@rkt/default-*` name the same lists.

Data only, imported by pod/isolators.py when a seccomp isolator or the default filter needs it.
"""

# Docker's default blacklist (clone and personality are argument-filtered by Docker: not here).
DOCKER_DEFAULT_BLACKLIST = tuple("""
    acct add_key adjtimex bpf clock_adjtime clock_settime create_module delete_module
    finit_module get_kernel_syms get_mempolicy init_module ioperm iopl kcmp kexec_file_load
    kexec_load keyctl lookup_dcookie mbind mount move_pages name_to_handle_at nfsservctl
    open_by_handle_at perf_event_open pivot_root process_vm_readv process_vm_writev ptrace
    query_module quotactl reboot request_key set_mempolicy setns settimeofday stime swapon
    swapoff sysfs _sysctl umount umount2 unshare uselib userfaultfd ustat vm86 vm86old
""".split())

# Docker's default whitelist as rkt copied it (2016): newer calls (clone3, rseq, statx, ...) are
# not in it, so a retain set built on it should name those an app's libc needs.
DOCKER_DEFAULT_WHITELIST = tuple("""
    accept accept4 access alarm bind brk capget capset chdir chmod chown chown32 clock_getres
    clock_gettime clock_nanosleep close connect copy_file_range creat dup dup2 dup3 epoll_create
    epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_wait epoll_wait_old eventfd eventfd2
    execve execveat exit exit_group faccessat fadvise64 fadvise64_64 fallocate fanotify_mark
    fchdir fchmod fchmodat fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr
    flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
    ftruncate64 futex futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
    geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp getpid
    getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
    get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday
    getuid getuid32 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch
    io_cancel ioctl io_destroy io_getevents ioprio_get ioprio_set io_setup io_submit ipc kill
    lchown lchown32 lgetxattr link linkat listen listxattr llistxattr _llseek lremovexattr lseek
    lsetxattr lstat lstat64 madvise memfd_create mincore mkdir mkdirat mknod mknodat mlock
    mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive
    mq_timedsend mq_unlink mremap msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
    nanosleep newfstatat _newselect open openat pause personality pipe pipe2 poll ppoll prctl
    pread64 preadv prlimit64 pselect6 pwrite64 pwritev read readahead readlink readlinkat readv
    recv recvfrom recvmmsg recvmsg remap_file_pages removexattr rename renameat renameat2
    restart_syscall rmdir rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn
    rt_sigsuspend rt_sigtimedwait rt_tgsigqueueinfo sched_getaffinity sched_getattr
    sched_getparam sched_get_priority_max sched_get_priority_min sched_getscheduler
    sched_rr_get_interval sched_setaffinity sched_setattr sched_setparam sched_setscheduler
    sched_yield seccomp select semctl semget semop semtimedop send sendfile sendfile64 sendmmsg
    sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups setgroups32
    setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
    setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt set_thread_area
    set_tid_address setuid setuid32 setxattr shmat shmctl shmdt shmget shutdown sigaltstack
    signalfd signalfd4 sigreturn socket socketcall socketpair splice stat stat64 statfs statfs64
    symlink symlinkat sync sync_file_range syncfs sysinfo syslog tee tgkill time timer_create
    timer_delete timerfd_create timerfd_gettime timerfd_settime timer_getoverrun timer_gettime
    timer_settime times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat utime
    utimensat utimes vfork vmsplice wait4 waitid waitpid write writev arch_prctl modify_ldt
    chroot clone
""".split())
