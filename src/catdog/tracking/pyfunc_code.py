"""The logged MLflow Model's code: MLflow runs this file to make the model, rather than unpickling an object.

Models from code (https://mlflow.org/docs/latest/ml/model/models-from-code/): loading a model runs only this file
and the catdog package logged beside it, never a pickle, which could run any code. mlflow_model.log names it.
"""

import mlflow

from catdog.tracking.mlflow_model import CatdogModel

mlflow.models.set_model(CatdogModel())
