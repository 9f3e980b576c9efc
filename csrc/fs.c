/*
 * Durable appends for the batch helpers' journal (lua/aliyun/iot/journal.lua). The journal
 * is the record of every ApplyId a job created; an ApplyId must be on disk before the job
 * polls it, so that a process killed at any moment loses nothing. Standard Lua can flush
 * its buffers but cannot ask the kernel to write them to the device, so this file offers
 * the steps that need C: append then fsync, cut a torn tail, and lock the journal so that
 * two processes never run the same job at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include "core.h"

#ifndef O_CLOEXEC
#define O_CLOEXEC 0
#endif

static int push_errno(lua_State *L, const char *what, const char *path, int err)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s %s: %s", what, path, strerror(err));
    return 2;
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

/*
 * core.append_sync(path, data) -> true | nil, message
 * Appends the string data to the file at path (created with mode 0600 when missing: the
 * journal holds DeviceSecrets), then fsyncs the file, and the directory when the file was
 * created, before returning. One call is one write(2) of the whole string in O_APPEND mode,
 * so whole lines never interleave with another appender's.
 * Errors (nil, message naming the path): open, write or fsync failures.
 */
static int l_append_sync(lua_State *L)
{
    size_t len;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &len);
    int created = 1, fd, err;

    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) {
        created = 0;
        fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    }
    if (fd < 0)
        return push_errno(L, "cannot open", path, errno);
    err = write_all(fd, data, len);
    if (err == 0 && fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err != 0)
        return push_errno(L, "cannot write", path, err);
    if (created && (err = sync_parent(path)) != 0)
        return push_errno(L, "cannot sync the folder of", path, err);
    lua_pushboolean(L, 1);
    return 1;
}

/*
 * core.truncate(path, size) -> true | nil, message
 * Cuts the file at path to size bytes (a whole number >= 0) and fsyncs it: the journal drops
 * a last line torn by a crash this way before it appends again.
 * Errors (nil, message naming the path): open, ftruncate or fsync failures.
 */
static int l_truncate(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Number size = luaL_checknumber(L, 2);
    int fd, err = 0;

    luaL_argcheck(L, size >= 0 && size <= 9007199254740992.0 && size == (off_t)size, 2,
                  "size must be a whole number >= 0");
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, "cannot open", path, errno);
    if (ftruncate(fd, (off_t)size) != 0 || fsync(fd) != 0)
        err = errno;
    if (close(fd) != 0 && err == 0)
        err = errno;
    if (err != 0)
        return push_errno(L, "cannot truncate", path, err);
    lua_pushboolean(L, 1);
    return 1;
}

#define LOCK_MT "aliyun.iot.core.lock"

typedef struct {
    int fd; /* -1 once released */
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
 * core.lock_file(path) -> lock | nil, message
 * Takes an exclusive, non-blocking lock on the existing file at path: flock(2) on a
 * descriptor of its own, so the lock belongs to this open file (not to the process, as
 * fcntl locks do: those would be dropped by any close of the same file, such as
 * append_sync's). Another process, or another lock_file in this one, fails while it is held.
 * The lock lasts until lock:unlock() (idempotent), a to-be-closed variable's end, or
 * garbage collection.
 * Errors (nil, message naming the path): the file cannot be opened, or is locked already
 * (the message then says "is locked").
 */
static int l_lock_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    file_lock *lk;
    int fd;

    fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return push_errno(L, "cannot open", path, errno);
    while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno;
        if (err == EINTR)
            continue;
        close(fd);
        if (err == EWOULDBLOCK) {
            lua_pushnil(L);
            lua_pushfstring(L, "%s is locked", path);
            return 2;
        }
        return push_errno(L, "cannot lock", path, err);
    }
    lk = (file_lock *)lua_newuserdatauv(L, sizeof *lk, 0);
    lk->fd = fd;
    luaL_getmetatable(L, LOCK_MT);
    lua_setmetatable(L, -2);
    return 1;
}

void aliyun_open_fs(lua_State *L)
{
    static const luaL_Reg lock_methods[] = {{"unlock", lock_release}, {NULL, NULL}};

    if (luaL_newmetatable(L, LOCK_MT)) {
        lua_pushstring(L, LOCK_MT);
        lua_setfield(L, -2, "__name");
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, lock_release);
        lua_setfield(L, -2, "__close");
        lua_newtable(L);
        luaL_setfuncs(L, lock_methods, 0);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    lua_pushcfunction(L, l_append_sync);
    lua_setfield(L, -2, "append_sync");
    lua_pushcfunction(L, l_truncate);
    lua_setfield(L, -2, "truncate");
    lua_pushcfunction(L, l_lock_file);
    lua_setfield(L, -2, "lock_file");
}
