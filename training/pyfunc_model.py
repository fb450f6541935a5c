"""MLflow "models from code" entry point of the pyfunc wrapper (``training.pyfunc``).

MLflow executes this file when the model is loaded, instead of unpickling a Python object: no
cloudpickle of our code in the registry (MLflow warns that unpickling may run arbitrary code).
"""

import mlflow

from training.pyfunc import NextBestActionPyfunc

mlflow.models.set_model(NextBestActionPyfunc())
