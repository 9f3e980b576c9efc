/*
 * Durable appends for the batch helpers' journal (lua/aliyun/iot/journal.lua). The journal
 * is the record of every ApplyId a job created; an ApplyId must be on disk before the job
 * polls it, so that a process killed at any moment loses nothing. Standard Lua can flush
 * its buffers but cannot ask the kernel to write them to the device, so this file offers
 * the one system-level step that needs C: append, then fsync.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
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

void aliyun_open_fs(lua_State *L)
{
    lua_pushcfunction(L, l_append_sync);
    lua_setfield(L, -2, "append_sync");
}
