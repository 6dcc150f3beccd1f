"""Op families; importing this package registers every op."""
from dslc.ops import activation  # noqa: F401
from dslc.ops import attention  # noqa: F401
from dslc.ops import conv  # noqa: F401
from dslc.ops import elementwise  # noqa: F401
from dslc.ops import linear  # noqa: F401
from dslc.ops import loss  # noqa: F401
from dslc.ops import norm  # noqa: F401
from dslc.ops import pool  # noqa: F401
from dslc.ops import shape_ops  # noqa: F401
from dslc.ops import source  # noqa: F401
from dslc.ops import activation_more  # noqa: F401
from dslc.ops import embedding  # noqa: F401
from dslc.ops import reduce  # noqa: F401
from dslc.ops import drop_path  # noqa: F401
from dslc.ops import recurrent  # noqa: F401
from dslc.ops import loss_more  # noqa: F401
