# C types for the compiled build of inproc.py (Cython pure-Python mode; see chorde/_speedups).
# The client's state becomes C fields (no instance-dict lookups, counters are C integers),
# and the default clock is read with one C call.

cdef extern from *:
    """
    #include <time.h>
    static double chorde_inproc_monotonic(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    }
    """
    double _c_monotonic "chorde_inproc_monotonic" () noexcept nogil

cdef bint _COMPILED

cdef class _InprocClient:
    cdef public object store
    cdef object _clock
    cdef object _lookup
    cdef object _touch
    cdef object _set
    cdef object _data
    cdef object _acquire
    cdef object _release
    cdef object _move
    cdef Py_ssize_t _capacity
    cdef bint _c_clock
    cdef Py_ssize_t _hits
    cdef Py_ssize_t _misses
    cdef Py_ssize_t _sets
