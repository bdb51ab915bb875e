package streamops.dbr;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;
import java.util.Locale;
import java.util.Map;

import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.NoSuchNamespaceException;
import org.apache.spark.sql.catalyst.analysis.NoSuchTableException;
import org.apache.spark.sql.classic.SparkSession;
import org.apache.spark.sql.connector.catalog.Identifier;
import org.apache.spark.sql.connector.catalog.StagedTable;
import org.apache.spark.sql.connector.catalog.Table;
import org.apache.spark.sql.connector.expressions.Transform;
import org.apache.spark.sql.delta.catalog.DeltaCatalog;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.util.CaseInsensitiveStringMap;

/**
 * A Unity Catalog catalog (`main` in `main.claims.claims_hourly`) for a local Databricks runtime.
 *
 * <p>Apache Spark's session catalog knows two-part names only. Registered as
 * `spark.sql.catalog.<name>`, this catalog maps `<name>.<schema>.<table>` to the session catalog's
 * `<schema>.<table>` (creating the database when missing) and lets Delta's own catalog create,
 * load and alter the table there, so DDL, DML, streams and OPTIMIZE behave as with Delta.
 *
 * <p>Unity Catalog outlives a cluster; Spark's in-memory session catalog does not. So each table's
 * location is also written to a small registry folder (option `registry`: one file per table,
 * `<schema>/<table>` holding its location), and a later session (the next run, the nightly
 * compaction) re-registers the external table from there when it is first named.
 */
public class LocalUnityCatalog extends DeltaCatalog {
  private String catalogName;
  private Path registry;

  @Override
  public void initialize(String name, CaseInsensitiveStringMap options) {
    catalogName = name;
    String folder = options.get("registry");
    registry = folder == null || folder.isEmpty() ? null : Paths.get(folder);
    // Spark hands a session-catalog delegate only to `spark_catalog`; this one asks for it.
    setDelegateCatalog(session().sessionState().catalogManager().v2SessionCatalog());
  }

  @Override
  public String name() {
    return catalogName;
  }

  @Override
  public Table loadTable(Identifier ident) {
    schemaOf(ident);
    try {
      Table table = super.loadTable(ident);
      remember(ident);
      return table;
    } catch (Exception e) {
      String location = registered(ident);
      if (!(isMissing(e) && location != null)) {
        throw e;
      }
      reRegister(ident, location);
      return super.loadTable(ident);
    }
  }

  @Override
  public boolean tableExists(Identifier ident) {
    try {
      loadTable(ident);
      return true;
    } catch (Exception e) {
      if (isMissing(e)) {
        return false;
      }
      throw e;
    }
  }

  @Override
  public Table createTable(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> props) {
    ensureDatabase(schemaOf(ident));
    Table table = super.createTable(ident, schema, partitions, props);
    remember(ident);
    return table;
  }

  @Override
  public StagedTable stageCreate(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> props) {
    ensureDatabase(schemaOf(ident));
    return super.stageCreate(ident, schema, partitions, props);
  }

  @Override
  public StagedTable stageCreateOrReplace(
      Identifier ident, StructType schema, Transform[] partitions, Map<String, String> props) {
    ensureDatabase(schemaOf(ident));
    return super.stageCreateOrReplace(ident, schema, partitions, props);
  }

  @Override
  public boolean dropTable(Identifier ident) {
    boolean dropped = super.dropTable(ident);
    forget(ident);
    return dropped;
  }

  @Override
  public boolean purgeTable(Identifier ident) {
    boolean purged = super.purgeTable(ident);
    forget(ident);
    return purged;
  }

  private static SparkSession session() {
    return SparkSession.active();
  }

  private static boolean isMissing(Exception e) {
    return e instanceof NoSuchTableException || e instanceof NoSuchNamespaceException;
  }

  private String schemaOf(Identifier ident) {
    if (ident.namespace().length != 1) {
      throw new IllegalArgumentException(
          "catalog '" + catalogName + "': a Unity Catalog table name is catalog.schema.table, got "
              + catalogName + "." + ident + ". Fix: name the table <catalog>.<schema>.<table>");
    }
    return ident.namespace()[0];
  }

  private static String quote(String name) {
    return "`" + name.replace("`", "``") + "`";
  }

  private void ensureDatabase(String schema) {
    if (!session().sessionState().catalog().databaseExists(schema)) {
      session().sql("CREATE DATABASE IF NOT EXISTS spark_catalog." + quote(schema));
    }
  }

  private void reRegister(Identifier ident, String location) {
    String schema = schemaOf(ident);
    ensureDatabase(schema);
    String literal = "'" + location.replace("\\", "\\\\").replace("'", "\\'") + "'";
    session().sql(
        "CREATE TABLE IF NOT EXISTS spark_catalog." + quote(schema) + "." + quote(ident.name())
            + " USING delta LOCATION " + literal);
  }

  private Path entry(Identifier ident) {
    String schema = schemaOf(ident).toLowerCase(Locale.ROOT);
    return registry.resolve(schema).resolve(ident.name().toLowerCase(Locale.ROOT));
  }

  private String registered(Identifier ident) {
    if (registry == null || !Files.isRegularFile(entry(ident))) {
      return null;
    }
    try {
      return Files.readString(entry(ident), StandardCharsets.UTF_8).trim();
    } catch (IOException e) {
      throw new IllegalStateException("cannot read " + entry(ident) + ": " + e, e);
    }
  }

  private void remember(Identifier ident) {
    if (registry == null) {
      return;
    }
    TableIdentifier id = new TableIdentifier(ident.name(), scala.Option.apply(schemaOf(ident)));
    String location;
    try {
      location = session().sessionState().catalog().getTableMetadata(id).location().toString();
    } catch (NoSuchTableException | NoSuchNamespaceException e) {
      return; // a staged table not committed yet: its first load records it
    }
    if (location.equals(registered(ident))) {
      return;
    }
    Path target = entry(ident);
    try {
      Files.createDirectories(target.getParent());
      // Written whole, then renamed: a concurrent run never reads half a location.
      Path tmp = Files.createTempFile(target.getParent(), ".entry", ".tmp");
      Files.writeString(tmp, location + "\n", StandardCharsets.UTF_8);
      Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    } catch (IOException e) {
      throw new IllegalStateException("cannot record " + target + ": " + e, e);
    }
  }

  private void forget(Identifier ident) {
    if (registry == null) {
      return;
    }
    try {
      Files.deleteIfExists(entry(ident));
    } catch (IOException e) {
      throw new IllegalStateException("cannot remove " + entry(ident) + ": " + e, e);
    }
  }
}
