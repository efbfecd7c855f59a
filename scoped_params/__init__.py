"""scoped_params: TF 1.x ``variable_scope``/``get_variable`` semantics as a pure JAX parameter store.

>>> import scoped_params as sp
>>> def fn(x):
...     with sp.scope("dense"):
...         w = sp.get_param("w", (x.shape[-1], 3))
...     return x @ w
>>> model = sp.transform(fn)
"""

from . import constraints as constraints
from . import initializers as initializers
from ._errors import (DtypeMismatchError as DtypeMismatchError,
                      InitializerError as InitializerError,
                      InvalidNameError as InvalidNameError,
                      KeyArgumentError as KeyArgumentError,
                      MissingRngError as MissingRngError,
                      NameCollisionError as NameCollisionError,
                      NestedTraceError as NestedTraceError,
                      NotInTransformError as NotInTransformError,
                      ParamExistsError as ParamExistsError,
                      ParamNotFoundError as ParamNotFoundError,
                      ParamsTypeError as ParamsTypeError,
                      ReuseArgumentError as ReuseArgumentError,
                      ScopedParamsError as ScopedParamsError,
                      ScopeNestingError as ScopeNestingError,
                      ShapeMismatchError as ShapeMismatchError,
                      StateError as StateError)
from ._frame import next_rng_key as next_rng_key
from ._frame import record as record
from ._frame import regularization_loss as regularization_loss
from ._params import get_param as get_param
from ._params import get_state as get_state
from ._params import set_state as set_state
from ._regularizers import l1_regularizer as l1_regularizer
from ._regularizers import l2_regularizer as l2_regularizer
from ._regularizers import no_regularizer as no_regularizer
from ._scope import AUTO_REUSE as AUTO_REUSE
from ._scope import Scope as Scope
from ._scope import current_name_scope as current_name_scope
from ._scope import get_scope as get_scope
from ._scope import name_scope as name_scope
from ._scope import scope as scope
from ._spec import ParamSpec as ParamSpec
from ._transform import Transformed as Transformed
from ._transform import transform as transform
from ._transform import transform_with_state as transform_with_state
from ._tree import ConstraintError as ConstraintError, SpecsMismatchError as SpecsMismatchError
from ._tree import apply_constraints as apply_constraints
from ._tree import exponential_moving_average as exponential_moving_average
from ._tree import filter_tree as filter_tree
from ._tree import flatten as flatten
from ._tree import merge as merge
from ._tree import partition as partition
from ._tree import partition_by_collection as partition_by_collection
from ._tree import partition_by_scope as partition_by_scope
from ._tree import partition_trainable as partition_trainable
from ._tree import select as select
from ._tree import unflatten as unflatten
from . import layers as layers
from .layers import make_template as make_template
from . import slim as slim
from ._layer_stack import layer_stack as layer_stack
from ._control_flow import cond as cond
from ._control_flow import fori_loop as fori_loop
from ._control_flow import remat as remat
from ._control_flow import scan as scan
from ._control_flow import switch as switch
from ._control_flow import while_loop as while_loop
from . import mixed_precision as mixed_precision
from . import optimizers as optimizers
from . import rnn as rnn
from . import sharding as sharding
from .sharding import init_sharded as init_sharded
from .sharding import shardings as shardings
from . import checkpoint as checkpoint
from ._summary import summary as summary

__version__ = "0.1.0"
