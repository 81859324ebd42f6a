"""Sign-in, roles, sessions with CSRF, bearer tokens, the audit log and the transport rules (HTTPS, allowed Host
names, security headers): one implementation for the store console and head office.

An application uses it in four steps (the bridge: `plugin/app.py` and `plugin/web/routes.py`):
1. `setup_auth(app)` (handlers): the middleware, the security headers, /login, /logout, /audit, /api/audit;
2. each route with `add_route(app, method, path, handler, permission)` (middleware): an undeclared one is refused;
3. once its database is open, `app[AUTH] = Auth(store, AuthSettings(...), roles, tokens)` (service), where `store`
   implements `AuthStore` (store; the bridge's SQLite one is sqlite.SqliteAuthStore) and `roles` maps names to
   `Role` (roles; the bridge's are BRIDGE_ROLES);
4. handlers read `principal_of(request)` (its role and `scope`, the stores it may see) and put `csrf_token(request)`
   in their forms. Users are managed with `users.add_user` / `set_password` / `set_role` / `remove_user`; at start,
   `users.first_admin` creates `admin` when there is no user.
"""
