/* flaskasync internal header: what differs between the Pythons we build
 * for, and the definitions every C file of the _core extension shares
 * (Python.h included right, FA_ASSERT).  Every header of csrc/ includes
 * it first; the structs and prototypes are in one header per concept
 * (loop.h, handle.h, ioset.h, ... : the file table in docs/architecture.md).
 * Nothing here is public API.
 *
 * References: a function of csrc/ that returns a PyObject * returns a new
 * reference, or NULL with an exception set, unless its declaration says
 * "borrowed". */
#ifndef FLASKASYNC_FA_H
#define FLASKASYNC_FA_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifdef FA_DEBUG
#define FA_ASSERT(x) assert(x)
#else
#define FA_ASSERT(x) ((void)0)
#endif

/* ------------------------------------------------ Python versions
 * What differs between the Pythons we build for (3.11 and newer) is here,
 * in one place: the C API bridges (the rest of csrc/ is written against
 * the current API; the exception ones are with the exception helpers in
 * util.h), then the asyncio/socket behaviours that changed with a
 * release, as FA_* constants that the code tests with plain C conditions.
 * What can be asked of the running interpreter instead (a function's
 * signature, an attribute that a release added) is asked at import, in
 * module.c. */

#if PY_VERSION_HEX < 0x030C0000
/* 3.12 moved the member types into Python.h, with a Py_ prefix, and
 * deprecated structmember.h. */
#include <structmember.h>
#define Py_T_BOOL T_BOOL
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_READONLY READONLY
#endif

/* Whether this thread's async generator hooks are (firstiter, finalizer),
 * read from the thread state where 3.11 and 3.12 keep them: 1 or 0.  -1
 * where that cannot be known without a call (3.13 moved the fields out of
 * the public struct). */
static inline int
fa_asyncgen_hooks_are(PyObject *firstiter, PyObject *finalizer)
{
#if PY_VERSION_HEX < 0x030D0000
    PyThreadState *ts = PyThreadState_Get();
    return ts->async_gen_firstiter == firstiter && ts->async_gen_finalizer == finalizer;
#else
    (void)firstiter;
    (void)finalizer;
    return -1;
#endif
}

/* From 3.12 on (gh-74895), socket.getaddrinfo() hands an int port that does
 * not fit a C long to getaddrinfo() as its decimal digits (which then
 * fails with gaierror, or wraps), where 3.11 raises OverflowError. */
#define FA_GAI_BIG_PORT_AS_DIGITS (PY_VERSION_HEX >= 0x030C0000)

/* From 3.12 on, asyncio.gather() handles the children that are already done
 * when it is called (finished futures, eager tasks that completed) at once,
 * after creating the outer future, instead of through done callbacks a loop
 * iteration later: a gather of finished children is finished on return. */
#define FA_GATHER_DONE_CHILDREN_AT_ONCE (PY_VERSION_HEX >= 0x030C0000)

/* From 3.13 on (gh-82500), the Unix loop's sock_sendfile() clamps the
 * block size it hands to os.sendfile(), so a count beyond a C ssize_t means
 * "the whole file"; 3.11 and 3.12 pass it as is and os.sendfile() raises
 * OverflowError. */
#define FA_SENDFILE_BIG_COUNT_OK (PY_VERSION_HEX >= 0x030D0000)

/* From 3.13 on (gh-113812), DatagramTransport.sendto() sends an empty
 * datagram (3.11 and 3.12 drop it), and the write buffer size counts 8
 * bytes of header per queued datagram, so that empty ones count too.
 * (Early 3.13 releases forget to take the 8 bytes off again when the
 * datagram goes out, so resume_writing() never comes: gh-135444, fixed in
 * later 3.13 releases and 3.14.  The fixed accounting is the one here.) */
#define FA_DGRAM_SEND_EMPTY (PY_VERSION_HEX >= 0x030D0000)
#define FA_DGRAM_HEADER_SIZE (PY_VERSION_HEX >= 0x030D0000 ? 8 : 0)

/* From 3.12 on, the weak reference list of a class whose __slots__ name
 * __weakref__ lives before the object (Py_TPFLAGS_MANAGED_WEAKREF), not in
 * a slot after the others: asyncio.Handle's layout differs (handle.c). */
#define FA_MANAGED_WEAKREF (PY_VERSION_HEX >= 0x030C0000)

#endif /* FLASKASYNC_FA_H */
