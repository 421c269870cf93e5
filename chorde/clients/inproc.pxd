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

@cython.final
@cython.freelist(256)
cdef class _Node:
    cdef public dict owner
    cdef public object key
    cdef public object value
    cdef public double expires
    cdef public _Node prev
    cdef public _Node next


cdef _Node _new_node(dict owner, object key, object value, double expires)
cdef object _subkey(object key)
cdef object _rest_key(object rest)


@cython.final
cdef class _Links:
    cdef public dict nodes
    cdef public dict spaces
    cdef public Py_ssize_t size
    cdef public _Node root
    cdef public Py_ssize_t capacity
    cdef public bint touch_on_read
    cdef public Py_ssize_t evictions
    cdef public object lock
    cdef object _acquire
    cdef object _release

    cdef dict _table(self, object key)
    @cython.locals(prev=_Node, nxt=_Node)
    cdef void _unlink(self, _Node node) noexcept
    @cython.locals(after=_Node)
    cdef void _link_after(self, _Node anchor, _Node node) noexcept
    cdef void _push(self, _Node node) noexcept
    cdef void _touch(self, _Node node) noexcept
    cdef int _read_touch(self, _Node node) except -1
    cpdef object live(self, object key, double now, object miss)
    @cython.locals(node=_Node)
    cpdef object live_in(self, dict table, object key, double now, object miss)
    @cython.locals(node=_Node)
    cpdef tuple entry(self, object key, double now)
    @cython.locals(node=_Node)
    cpdef tuple peek(self, object key)
    @cython.locals(old=_Node)
    cpdef put(self, object key, object value, double expires)
    @cython.locals(victim=_Node)
    cdef int _put_locked(self, dict table, object key, _Node node, _Node old) except -1


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
