
import warnings

# confluent-kafka imports authlib's httpx integration, which warns at import time that it is
# deprecated: noise on every command's stderr that no user of ours can act on. authlib puts an
# "always" filter for its warnings first when it is imported, so ours goes in after that.
try:
    import authlib.deprecate  # noqa: F401
except ImportError:  # not installed: nothing to silence
    pass
warnings.filterwarnings("ignore", message="The httpx module is deprecated")
