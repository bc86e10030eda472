from order_common.migrations import run_env
from orders_service.models import Base

run_env(Base.metadata)
