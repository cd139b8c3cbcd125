"""The code file MLflow stores with every seglab model ("models from code", no pickling).

``mlflow.pyfunc.save_model(python_model=<this file>)`` copies this file into the model; loading
the model runs it, which imports :class:`seglab.models.pyfunc.BundleModel` from the installed
package and hands an instance to MLflow. Nothing is unpickled, so loading a registered model
cannot run code hidden in a pickle. seglab's own commands do not run this stored copy at all:
:func:`seglab.models.pyfunc.load_downloaded_model` reads the model's files as data, so a file
altered in the artifact store cannot run code on the machines that load the model.
"""

from mlflow.models import set_model

from seglab.models.pyfunc import BundleModel

set_model(BundleModel())
