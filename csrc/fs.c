/*
 * Files for the batch helpers' journal (lua/aliyun/iot/journal.lua) and for the CLI. The
 * journal is the record of every ApplyId a job created; an ApplyId must be on disk before
 * the job polls it, so that a process killed at any moment loses nothing. Standard Lua can
 * flush its buffers but cannot ask the kernel to write them to the device, create a file
 * exclusively, refuse what is not a regular file, or lock, so this file offers those steps:
 * an open journal file (exclusive create or an existing regular file, locked on the same
 * descriptor before anything is written; append then fsync; bounded read; truncate), what
 * is at a path (lstat, no shell probes), a bounded read of a regular file, and turning off
 * core dumps for a process that holds secrets.
 *
 * Failures return `nil, message, errno` as luaL_fileresult does, so callers test errno
 * names rather than parsing messages.
 */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "core.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif
#ifndef O_NOFOLLOW
#define O_NOFOLLOW 0
#endif

/* nil, "what path: strerror(err)", err: the luaL_fileresult shape. */
static int push_errno(lua_State *L, const char *what, const char *path, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    lua_pushinteger(L, err);
    return 3;
}

/* true when err is 0, else push_errno's nil, message, errno: how every step ends. */
static int push_done(lua_State *L, int err, const char *what, const char *path)
{
    if (err != 0)
        return push_errno(L, what, path, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* nil, "path what", err: a failure whose strerror text would mislead ("is locked"). */
static int push_plain(lua_State *L, const char *path, const char *what, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s", path, what);
    lua_pushinteger(L, err);
    return 3;
}

/* Takes an exclusive, non-blocking flock on *fd, resuming after signals. 0 when held;
 * else closes *fd, sets it to -1, pushes nil, message, errno and returns 3. */
static int lock_or_push(lua_State *L, int *fd, const char *path)
{
    while (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EINTR)
            continue;
        close(*fd);
        *fd = -1;
        if (err == EWOULDBLOCK)
            return push_plain(L, path, "is locked", err);
        return push_errno(L, "cannot lock", path, err);
    }
    return 0;
}

/* A path for open(2): a Lua string with a NUL inside would be cut silently there. */
static const char *check_path(lua_State *L, int arg)
{
    size_t len;
    const char *path = luaL_checklstring(L, arg, &len);
    luaL_argcheck(L, strlen(path) == len, arg, "path contains a NUL byte");
    return path;
}

/* Pushes "device:inode", the identity of a file. */
static void push_id(lua_State *L, const struct stat *st)
{
    char id[64];
    snprintf(id, sizeof id, "%llu:%llu", (unsigned long long)st->st_dev,
             (unsigned long long)st->st_ino);
    lua_pushstring(L, id);
}

/* Writes all of buf, resuming after signals and short writes. Returns 0 or an errno. */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* write_all, then fsync: the data is on the device when this returns 0. Else an errno. */
static int write_sync(int fd, const char *buf, size_t len)
{
    int err = write_all(fd, buf, len);
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    return err;
}

/* fsyncs the directory holding path, so that a newly created file's name is durable too. */
static int sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd, rc = 0;

    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else {
        size_t n = (size_t)(slash - path);
        if (n == 0)
            n = 1; /* "/file": the root directory */
        if (n >= sizeof dir)
            return ENAMETOOLONG;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno;
    if (fsync(fd) != 0 && errno != EINVAL) /* some file systems cannot sync a directory */
        rc = errno;
    close(fd);
    return rc;
}

/* Reads up to max bytes of fd from offset 0 into a new string at the stack top.
   Returns 0, or an errno (EFBIG when the file holds more than max bytes). */
static int read_bounded(lua_State *L, int fd, size_t max)
{
    luaL_Buffer b;
    size_t total = 0;

    luaL_buffinit(L, &b);
    for (;;) {
        char *p = luaL_prepbuffer(&b);
        size_t want = LUAL_BUFFERSIZE;
        ssize_t n;
        if (want > max + 1 - total)
            want = max + 1 - total; /* one byte past max tells a file that is too big */
        n = pread(fd, p, want, (off_t)total);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            luaL_pushresult(&b);
            lua_pop(L, 1);
            return errno;
        }
        if (n == 0)
            break;
        luaL_addsize(&b, (size_t)n);
        total += (size_t)n;
        if (total > max) {
            luaL_pushresult(&b);
            lua_pop(L, 1);
            return EFBIG;
        }
    }
    luaL_pushresult(&b);
    return 0;
}

/* nil, "<prefix> is larger than MAX bytes", EFBIG. */
static int push_too_big(lua_State *L, const char *prefix, size_t max)
{
    char n[32];
    snprintf(n, sizeof n, "%llu", (unsigned long long)max);
    lua_pushnil(L);
    lua_pushfstring(L, "%s is larger than %s bytes", prefix, n);
    lua_pushinteger(L, EFBIG);
    return 3;
}

static size_t check_max(lua_State *L, int arg)
{
    lua_Number max = luaL_checknumber(L, arg);
    luaL_argcheck(L, max >= 0 && max <= 4294967296.0 && max == (lua_Number)(size_t)max, arg,
                  "max_bytes must be a whole number from 0 to 2^32");
    return (size_t)max;
}

/* An open journal file --------------------------------------------------------------- */

#define JFILE_MT "aliyun.iot.core.journal_file"

typedef struct {
    int fd; /* -1 before open and once closed */
} journal_file;

static journal_file *check_open(lua_State *L)
{
    journal_file *f = (journal_file *)luaL_checkudata(L, 1, JFILE_MT);
    if (f->fd < 0)
        luaL_error(L, "attempt to use a closed journal file");
    return f;
}

/* Closes the descriptor, dropping its flock. Idempotent; for close, __gc and __close. */
static int jfile_close(lua_State *L)
{
    journal_file *f = (journal_file *)luaL_checkudata(L, 1, JFILE_MT);
    int err = 0;
    if (f->fd >= 0) {
        if (close(f->fd) != 0)
            err = errno;
        f->fd = -1;
    }
    return push_done(L, err, "cannot close", "the journal");
}

/*
 * file:append(data) -> true | nil, message, errno
 * One write(2) of the whole string at the end of the file (O_APPEND) through the locked
 * descriptor, then fsync, before returning: the data is on the device when this returns.
 */
static int jfile_append(lua_State *L)
{
    journal_file *f = check_open(L);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    return push_done(L, write_sync(f->fd, data, len), "cannot write", "the journal");
}

/*
 * file:read(max_bytes) -> string | nil, message, errno
 * The whole file from its start; EFBIG when it holds more than max_bytes.
 */
static int jfile_read(lua_State *L)
{
    journal_file *f = check_open(L);
    size_t max = check_max(L, 2);
    int err = read_bounded(L, f->fd, max);
    if (err == EFBIG)
        return push_too_big(L, "the journal", max);
    if (err != 0)
        return push_errno(L, "cannot read", "the journal", err);
    return 1;
}

/*
 * file:truncate(size) -> true | nil, message, errno
 * Cuts the file to size bytes and fsyncs it: a last line torn by a crash is dropped this
 * way before the job appends again.
 */
static int jfile_truncate(lua_State *L)
{
    journal_file *f = check_open(L);
    lua_Number size = luaL_checknumber(L, 2);
    luaL_argcheck(L, size >= 0 && size <= 9007199254740992.0 && size == (off_t)size, 2,
                  "size must be a whole number >= 0");
    int err = (ftruncate(f->fd, (off_t)size) != 0 || fsync(f->fd) != 0) ? errno : 0;
    return push_done(L, err, "cannot truncate", "the journal");
}

/*
 * file:id() -> string
 * The identity of the open file ("device:inode"), to compare with `core.file_kind`'s
 * second result: a path is removed only while it still names the file this run created.
 */
static int jfile_id(lua_State *L)
{
    journal_file *f = check_open(L);
    struct stat st;
    if (fstat(f->fd, &st) != 0)
        return push_errno(L, "cannot stat", "the journal", errno);
    push_id(L, &st);
    return 1;
}

/* Opens f->fd for journal_open: a new file (exclusive) or an existing regular one. */
static int jfile_open_fd(journal_file *f, const char *path, int create)
{
    struct stat st;
    if (create) {
        /* O_EXCL: never an existing file, and never through a symlink (even a dangling one) */
        f->fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    } else {
        /* lstat first: a device is never opened (opening one can act), a FIFO never waited on */
        if (lstat(path, &st) != 0)
            return errno;
        if (!S_ISREG(st.st_mode))
            return S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        f->fd = open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    }
    if (f->fd < 0)
        return errno;
    if (fstat(f->fd, &st) != 0)
        return errno;
    if (!S_ISREG(st.st_mode)) /* replaced between lstat and open */
        return EINVAL;
    return 0;
}

/*
 * core.journal_open(path, how) -> file | nil, message, errno
 * how = "create": a new regular file, created exclusively with mode 0600 (it holds
 * DeviceSecrets), never through a symlink; "existing": an existing regular file (not a
 * symlink, device, FIFO or folder). Either way the file is locked (flock LOCK_EX|LOCK_NB)
 * on this descriptor before anything is written, and stays locked until file:close(), a
 * to-be-closed variable's end, or garbage collection; a created file's folder is fsync'ed.
 * Errors: EEXIST (create: something is there already), EINVAL (existing: not a regular
 * file), EWOULDBLOCK (locked by another open file: the message says "is locked"), and
 * open's own.
 */
static int l_journal_open(lua_State *L)
{
    static const char *const hows[] = {"existing", "create", NULL};
    const char *path = check_path(L, 1);
    int create = luaL_checkoption(L, 2, NULL, hows);
    journal_file *f = (journal_file *)lua_newuserdatauv(L, sizeof *f, 0);
    int err;

    f->fd = -1; /* the userdata exists before the descriptor it will own */
    luaL_getmetatable(L, JFILE_MT);
    lua_setmetatable(L, -2);
    err = jfile_open_fd(f, path, create);
    if (err == EINVAL && !create)
        return push_plain(L, path, "is not a regular file", err);
    if (err != 0)
        return push_errno(L, "cannot open", path, err);
    if (lock_or_push(L, &f->fd, path) != 0)
        return 3;
    if (create && (err = sync_parent(path)) != 0)
        return push_errno(L, "cannot sync the folder of", path, err);
    return 1;
}

/* Paths ------------------------------------------------------------------------------ */

/*
 * core.file_kind(path [, follow]) -> kind, id, special | nil, message, errno
 * What is at path, by lstat(2) (stat(2) when follow is true, so "link" never comes back
 * and a dangling link is "none"): "none", "file" (regular), "folder", "link" or "special"
 * (device, FIFO, socket); id is "device:inode" (nil for "none"); for "special", which
 * one: "fifo" (an open for writing waits for a reader), "socket" or "device". Runs in
 * this process, so descriptor names such as /dev/stdout name this process's own.
 * Errors: any stat failure other than ENOENT and ENOTDIR.
 */
static int l_file_kind(lua_State *L)
{
    const char *path = check_path(L, 1);
    int follow = lua_toboolean(L, 2);
    struct stat st;
    const char *kind;

    if ((follow ? stat(path, &st) : lstat(path, &st)) != 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            lua_pushliteral(L, "none");
            return 1;
        }
        return push_errno(L, "cannot stat", path, errno);
    }
    if (S_ISREG(st.st_mode))
        kind = "file";
    else if (S_ISDIR(st.st_mode))
        kind = "folder";
    else if (S_ISLNK(st.st_mode))
        kind = "link";
    else
        kind = "special";
    lua_pushstring(L, kind);
    push_id(L, &st);
    if (strcmp(kind, "special") != 0)
        return 2;
    lua_pushstring(L, S_ISFIFO(st.st_mode) ? "fifo" : S_ISSOCK(st.st_mode) ? "socket" : "device");
    return 3;
}

/*
 * core.cwd() -> path | nil, message, errno
 * The process's working folder (getcwd(3)): what makes a relative path absolute in a
 * command printed for later (a run again from another folder must find the same files).
 * $PWD is not it: a shell's, it may be stale or absent. The buffer doubles on ERANGE, up
 * to 1 MiB.
 */
static int l_cwd(lua_State *L)
{
    size_t size = 256;

    for (;;) {
        char *buf = (char *)lua_newuserdatauv(L, size, 0); /* freed by the GC on any error */
        if (getcwd(buf, size) != NULL) {
            lua_pushstring(L, buf);
            return 1;
        }
        if (errno != ERANGE || size >= (size_t)1 << 20)
            return push_errno(L, "cannot read", "the working folder", errno);
        lua_pop(L, 1);
        size *= 2;
    }
}

/*
 * core.read_file(path, max_bytes) -> string | nil, message, errno
 * The contents of the regular file at path (symlinks followed), at most max_bytes: a
 * device (/dev/zero), FIFO or folder is refused (EINVAL, EISDIR) without waiting on it,
 * and a larger file is refused (EFBIG) rather than read into memory.
 */
static int l_read_file(lua_State *L)
{
    const char *path = check_path(L, 1);
    size_t max = check_max(L, 2);
    struct stat st;
    int fd, err;

    if (stat(path, &st) != 0)
        return push_errno(L, "cannot read", path, errno);
    if (!S_ISREG(st.st_mode)) {
        err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        lua_pushnil(L);
        lua_pushfstring(L, "cannot read %s: %s", path,
                        err == EISDIR ? "it is a folder" : "it is not a regular file");
        lua_pushinteger(L, err);
        return 3;
    }
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, "cannot read", path, errno);
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return push_errno(L, "cannot read", path, EINVAL);
    }
    err = read_bounded(L, fd, max);
    close(fd);
    if (err == EFBIG) {
        lua_pushfstring(L, "cannot read %s: it", path);
        return push_too_big(L, lua_tostring(L, -1), max);
    }
    if (err != 0)
        return push_errno(L, "cannot read", path, err);
    return 1;
}

/*
 * core.disable_core_dumps() -> true | nil, message, errno
 * No core file for this process (RLIMIT_CORE 0) and, on Linux, not dumpable
 * (PR_SET_DUMPABLE 0: no core through a pipe handler either, and no ptrace attach by
 * other processes of the same user): the CLI holds the AccessKeySecret in memory.
 */
static int l_disable_core_dumps(lua_State *L)
{
    struct rlimit rl;
    rl.rlim_cur = 0;
    rl.rlim_max = 0;
    if (setrlimit(RLIMIT_CORE, &rl) != 0)
        return push_errno(L, "cannot set", "RLIMIT_CORE", errno);
#ifdef __linux__
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        return push_errno(L, "cannot set", "PR_SET_DUMPABLE", errno);
#endif
    lua_pushboolean(L, 1);
    return 1;
}

/*
 * core.ignore_file_size_signal() -> true
 * SIGXFSZ ignored: past a file-size limit (ulimit -f, systemd's LimitFSIZE) a write then
 * fails with EFBIG, which the caller reports and survives, instead of the signal killing
 * the process mid-job with nothing said.
 */
static int l_ignore_file_size_signal(lua_State *L)
{
    signal(SIGXFSZ, SIG_IGN);
    lua_pushboolean(L, 1);
    return 1;
}

/* Path-based steps (kept for callers that hold no journal file) ----------------------- */

/*
 * core.append_sync(path, data) -> true | nil, message, errno
 * Appends data to the existing regular file at path (never through a symlink) and fsyncs
 * it. The journal itself appends through its locked descriptor (file:append).
 */
static int l_append_sync(lua_State *L)
{
    size_t len;
    const char *path = check_path(L, 1);
    const char *data = luaL_checklstring(L, 2, &len);
    struct stat st;
    int fd, err;

    fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, "cannot open", path, errno);
    err = fstat(fd, &st) != 0 ? errno : (S_ISREG(st.st_mode) ? 0 : EINVAL);
    if (err == 0)
        err = write_sync(fd, data, len);
    if (close(fd) != 0 && err == 0)
        err = errno;
    return push_done(L, err, "cannot write", path);
}

#define LOCK_MT "aliyun.iot.core.lock"

typedef struct {
    int fd; /* -1 before the lock is taken and once released */
} file_lock;

static int lock_release(lua_State *L)
{
    file_lock *lk = (file_lock *)luaL_checkudata(L, 1, LOCK_MT);
    if (lk->fd >= 0) {
        close(lk->fd); /* closing the descriptor drops its flock */
        lk->fd = -1;
    }
    return 0;
}

/*
 * core.lock_file(path) -> lock | nil, message, errno
 * Takes an exclusive, non-blocking flock on the existing regular file at path, on a
 * descriptor of its own; another lock_file or journal_open of the same file fails while
 * it is held (EWOULDBLOCK, the message then says "is locked"). The lock lasts until
 * lock:unlock() (idempotent), a to-be-closed variable's end, or garbage collection.
 */
static int l_lock_file(lua_State *L)
{
    const char *path = check_path(L, 1);
    file_lock *lk = (file_lock *)lua_newuserdatauv(L, sizeof *lk, 0);

    lk->fd = -1; /* made before the descriptor, so a memory error leaks nothing */
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, -2);
    lk->fd = open(path, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (lk->fd < 0)
        return push_errno(L, "cannot open", path, errno);
    if (lock_or_push(L, &lk->fd, path) != 0)
        return 3;
    return 1;
}

void aliyun_open_fs(lua_State *L)
{
    static const luaL_Reg lock_methods[] = {{"unlock", lock_release}, {NULL, NULL}};
    static const luaL_Reg jfile_methods[] = {
        {"append", jfile_append}, {"read", jfile_read}, {"truncate", jfile_truncate},
        {"id", jfile_id}, {"close", jfile_close}, {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"journal_open", l_journal_open}, {"file_kind", l_file_kind},
        {"read_file", l_read_file}, {"disable_core_dumps", l_disable_core_dumps},
        {"ignore_file_size_signal", l_ignore_file_size_signal},
        {"append_sync", l_append_sync}, {"lock_file", l_lock_file}, {"cwd", l_cwd}, {NULL, NULL}};

    static const luaL_Reg lock_meta[] = {
        {"__gc", lock_release}, {"__close", lock_release}, {NULL, NULL}};
    static const luaL_Reg jfile_meta[] = {
        {"__gc", jfile_close}, {"__close", jfile_close}, {NULL, NULL}};

    aliyun_newclass(L, LOCK_MT, lock_methods, lock_meta);
    aliyun_newclass(L, JFILE_MT, jfile_methods, jfile_meta);
    luaL_setfuncs(L, funcs, 0);
}
