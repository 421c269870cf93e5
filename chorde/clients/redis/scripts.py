"""The Lua scripts that make the Redis client's writes atomic on the server.

Every stored value is ``generation (8 bytes) + signed payload`` (see
:mod:`chorde.serialization`); the namespace's *record* (``KEYS[2]`` below, or ``KEYS[1]`` for
the horizon) is ``generation (8 bytes) + purge horizon (big-endian double)``, absent meaning
generation zero and no horizon. A script runs alone on its server, so what it reads cannot
change before it writes: that is what makes ``add`` one atomic command, and ``PUT`` stamp
the generation current *when the value lands* (the client uses it when the generation it
last read is older than ``generation_check``).

Scripts are called by SHA1 (``EVALSHA``); a server that does not know one yet (new or
restarted) answers ``NOSCRIPT`` and the client sends it whole once (``EVAL``, which also
caches it there). Both reach the node of their keys, in a cluster too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

__all__ = ["ADD", "CAS", "HORIZON", "LEASE", "PUT", "RELEASE", "Script"]

# The payload's expiry: after the generation (8) and the serializer's magic (2), version (1),
# flags (1), key id (4) and key length (4), a big-endian double; Lua strings count from 1.
_PRELUDE = """
local r = redis.call('GET', KEYS[2])
local g = string.rep('\\0', 8)
if r and #r >= 8 then g = string.sub(r, 1, 8) end
local function store(value)
  if ARGV[2] == '0' then
    redis.call('SET', KEYS[1], g .. value)
  else
    redis.call('SET', KEYS[1], g .. value, 'PX', ARGV[2])
  end
end
"""


@dataclass(frozen=True)
class Script:
    """A script's source and SHA1."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


#: ``PUT data record`` ``payload px``: store under the current generation; return the record.
PUT = Script("put", _PRELUDE + "store(ARGV[1])\nreturn r\n")

#: ``ADD data record`` ``payload px now``: store unless a live entry of the current generation
#: is there (its expiry later than ``now``); 1 when stored, else 0.
ADD = Script(
    "add",
    _PRELUDE
    + """
local cur = redis.call('GET', KEYS[1])
if cur and #cur >= 28 and string.sub(cur, 1, 8) == g and string.sub(cur, 9, 10) == '\\196\\222'
   and struct.unpack('>d', cur, 21) > tonumber(ARGV[3]) then
  return 0
end
store(ARGV[1])
return 1
""",
)

#: ``CAS data record`` ``payload px tag``: replace the entry if it still ends with ``tag`` (its
#: signature, 32 bytes) and is of the current generation: 1; 0 when it changed meanwhile; -1
#: when it is gone (deleted, expired, or of an older generation).
CAS = Script(
    "cas",
    _PRELUDE
    + """
local cur = redis.call('GET', KEYS[1])
if not cur or string.sub(cur, 1, 8) ~= g then
  return -1
end
if string.sub(cur, -32) ~= ARGV[3] then
  return 0
end
store(ARGV[1])
return 1
""",
)

#: ``LEASE data record lease`` ``token px``: take the lease (``SET NX PX``: its holder's
#: token, lapsing by itself) and read the entry and the record again, in one command:
#: ``[data, record, 1 when taken]`` (see :mod:`chorde.leases`).
LEASE = Script(
    "lease",
    """
local won = redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2]), won and 1 or 0}
""",
)

#: ``RELEASE lease`` ``token``: delete the lease if ``token`` still holds it; 1 when deleted.
RELEASE = Script(
    "release",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""",
)

#: ``HORIZON record`` ``horizon``: raise the purge horizon (a packed big-endian double) of the
#: record, keeping its generation; 1 when raised.
HORIZON = Script(
    "horizon",
    """
local r = redis.call('GET', KEYS[1])
local g = string.rep('\\0', 8)
local h = 0
if r and #r >= 8 then g = string.sub(r, 1, 8) end
if r and #r >= 16 then h = struct.unpack('>d', r, 9) end
if struct.unpack('>d', ARGV[1]) > h then
  redis.call('SET', KEYS[1], g .. ARGV[1])
  return 1
end
return 0
""",
)
