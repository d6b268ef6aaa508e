"""The web dashboard (contract: Dashboard): 消息分析 for people, at ``/dashboard``.

``routes`` is mounted by ``msgcube.web.app.create_app``. Every number on the page comes
from ``msgcube.rollup.query.served_list`` (``data.py``), the function behind the API and
``msgcube stats``; the charts are drawn by plotly.js, served from the installed ``plotly``
package (``assets.py``).
"""

from msgcube.web.dashboard.routes import routes

__all__ = ["routes"]
