# C types for the compiled build of inproc.py (Cython pure-Python mode; see chorde/_speedups).
# The client's state becomes C fields (no instance-dict lookups, counters are C numbers),
# and the default clock is read with one C call. The linked LRU store's nodes and list are C
# types too: a read is one dict lookup and a relink of C fields, atomic under the GIL.

cdef extern from *:
    """
    #if defined(__linux__)
    #include <time.h>
    static double chorde_inproc_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    #else
    /* time.monotonic reads another clock on macOS and Windows: -1 makes the client call it. */
    static double chorde_inproc_monotonic(void) { return -1.0; }
    #endif
    """
    double _c_monotonic "chorde_inproc_monotonic" () noexcept nogil

cimport cython

cdef bint _COMPILED
# The slot constants of _Links: C numbers.
cdef int _CHUNK_BITS
cdef Py_ssize_t _CHUNK
cdef Py_ssize_t _CHUNK_MASK
cdef Py_ssize_t _ROOT
cdef Py_ssize_t _UNLINKED
cdef Py_ssize_t _MAX_SLOTS

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_REFCNT
from cpython.pythread cimport (
    NOWAIT_LOCK,
    WAIT_LOCK,
    PyThread_acquire_lock,
    PyThread_allocate_lock,
    PyThread_free_lock,
    PyThread_get_thread_ident,
    PyThread_release_lock,
    PyThread_type_lock,
)


cdef inline int* _grow_ints(int* array, Py_ssize_t count) except NULL:
    """``array`` (or NULL) with room for ``count`` C ints."""
    cdef int* grown = <int*>PyMem_Realloc(array, count * sizeof(int))
    if grown == NULL:
        raise MemoryError()
    return grown


cdef inline void _free_ints(int* array) noexcept:
    PyMem_Free(array)


# A node holds no Python reference (its key, value and links are its store's, at its
# slot), so it need not be tracked by the garbage collector: 32 bytes, not 80.
@cython.final
@cython.no_gc
cdef class _Node:
    cdef public int slot
    cdef public double expires


@cython.locals(node=_Node)
cdef _Node _new_node(int slot, double expires)
cdef object _subkey(object key)
cdef object _rest_key(object rest)


@cython.final
@cython.boundscheck(False)  # slot numbers are in range by construction
@cython.wraparound(False)
cdef class _Links:
    cdef public dict nodes
    cdef public dict spaces
    cdef public list space_tables
    cdef public dict space_ids
    cdef public list chunks
    cdef int* links
    cdef int* slot_space
    cdef public Py_ssize_t slots
    cdef public Py_ssize_t space_room
    cdef public Py_ssize_t top
    cdef public Py_ssize_t free
    cdef public Py_ssize_t head
    cdef public Py_ssize_t tail
    cdef public Py_ssize_t size
    cdef public Py_ssize_t capacity
    cdef public bint touch_on_read
    cdef public Py_ssize_t evictions
    cdef object lock  # (pure Python's; compiled, the C lock below)
    cdef PyThread_type_lock _wlock
    cdef unsigned long _lock_owner
    cdef Py_ssize_t _lock_depth

    cdef int _lock(self) except -1
    cdef int _unlock(self) noexcept
    cdef dict _table(self, object key)
    @cython.locals(number=int)
    cdef dict _owner(self, Py_ssize_t slot)
    cdef inline object _key(self, Py_ssize_t slot)
    cdef inline object _value(self, Py_ssize_t slot)
    cdef int _set_key(self, Py_ssize_t slot, object key) except -1
    @cython.locals(chunk=list, i=Py_ssize_t)
    cdef object _set_value(self, Py_ssize_t slot, object value)
    @cython.locals(links="int*", prev=Py_ssize_t, nxt=Py_ssize_t)
    cdef int _unlink(self, Py_ssize_t slot) noexcept
    @cython.locals(links="int*", head=Py_ssize_t)
    cdef int _push(self, Py_ssize_t slot) noexcept
    cdef int _touch(self, Py_ssize_t slot) noexcept
    @cython.locals(slot=Py_ssize_t)
    cdef Py_ssize_t _alloc(self) except -1
    cdef int _grow(self, Py_ssize_t slots) except -1
    @cython.locals(old=Py_ssize_t, slot=Py_ssize_t)
    cdef int _grow_space(self, Py_ssize_t slots) except -1
    @cython.locals(chunk=list, i=Py_ssize_t)
    cdef int _free_slot(self, Py_ssize_t slot) except -1
    cpdef object live(self, object key, double now, object miss)
    @cython.locals(node=_Node)
    cpdef object live_in(self, dict table, object key, double now, object miss)
    @cython.locals(slot=Py_ssize_t)
    cdef object _live_node(self, _Node node, object miss)
    @cython.locals(node=_Node)
    cpdef tuple entry(self, object key, double now)
    @cython.locals(slot=Py_ssize_t, expires=double)
    cdef tuple _entry_node(self, _Node node, double now, object key)
    @cython.locals(node=_Node)
    cpdef tuple peek(self, object key)
    @cython.locals(slot=Py_ssize_t)
    cdef tuple _peek_node(self, _Node node, object key)
    @cython.locals(old=_Node, slot=Py_ssize_t, previous=object)
    cpdef put(self, object key, object value, double expires)
    @cython.locals(slot=Py_ssize_t, chunk=list, i=Py_ssize_t, node=_Node, victim=_Node)
    cdef int _insert(self, dict table, object key, object value, double expires) except -1


# Whether ``node`` is referenced only by the caller's one variable (an argument is borrowed).
cdef inline bint _sole_ref(_Node node) noexcept:
    return Py_REFCNT(node) == 1


# The write lock of _Links: reentrant, taken with no Python call; a wait releases the GIL.
cdef inline int _new_lock(_Links links) except -1:
    links._wlock = PyThread_allocate_lock()
    if links._wlock == NULL:
        raise MemoryError()
    return 0


cdef inline void _free_lock(_Links links) noexcept:
    if links._wlock != NULL:
        PyThread_free_lock(links._wlock)
        links._wlock = NULL


cdef inline int _lock_links(_Links links) except -1:
    cdef unsigned long me = PyThread_get_thread_ident()
    if links._lock_depth and links._lock_owner == me:
        links._lock_depth += 1
        return 0
    if not PyThread_acquire_lock(links._wlock, NOWAIT_LOCK):
        with nogil:
            PyThread_acquire_lock(links._wlock, WAIT_LOCK)
    links._lock_owner = me
    links._lock_depth = 1
    return 0


cdef inline void _unlock_links(_Links links) noexcept:
    links._lock_depth -= 1
    if links._lock_depth == 0:
        links._lock_owner = 0
        PyThread_release_lock(links._wlock)


cdef class _InprocClient:
    cdef public object store
    cdef object _clock
    cdef object _entries
    cdef object _touch
    cdef object _set
    cdef object _data
    cdef object _acquire
    cdef object _release
    cdef object _move
    cdef Py_ssize_t _capacity
    cdef bint _c_clock
    cdef double _hits
    cdef Py_ssize_t _misses
    cdef Py_ssize_t _sets
    cdef _Links _links


    @cython.locals(now=double)
    cpdef object namespace_get(self, dict table, object rest, double threshold, object miss)
    # The hot reads: their clock readings stay C doubles.
    @cython.locals(now=double)
    cpdef object get(self, object key, object default=*)
    @cython.locals(now=double, left=double)
    cpdef tuple getTtl(self, object key, object default=*)
